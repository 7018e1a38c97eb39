"""rewards.py, code tasks: which fenced block is the program (extract_code), the program run
(code_program) and the canonical form that counts distinct programs (normalise_code)."""
import pytest

from rewards import code_program, extract_code, normalise_code

FENCED = "```python\ndef f(x):\n    return x + 1\n```"


@pytest.mark.parametrize("text, expected", [
    (FENCED, "def f(x):\n    return x + 1\n"),
    ("Sure:\n```py\nx = 1\n```\nDone.", "x = 1\n"),
    ("```Python3\nx = 1\n```", "x = 1\n"),                               # language in any case
    ("```\nx = 1\n```", "x = 1\n"),                                       # a bare fence
    ("```python\nx = 1\n```\nbetter:\n```python\nx = 2\n```", "x = 2\n"),  # the last block wins
    ("```python\nx = 1\n```\nrun it:\n```bash\npython x.py\n```", "x = 1\n"),  # other languages are skipped
    ("```python\r\nx = 1\r\n```\r\n", "x = 1\r\n"),                       # CRLF line ends
    ("  ```python\n  x = 1\n  ```", "  x = 1\n"),                         # an indented fence (in a list)
    ("```python\n```", ""),                                               # an empty block is a block
    ("```python\n# ```python is not a fence here\nx = 1\n```", "# ```python is not a fence here\nx = 1\n"),
    ("```python\nx = 1\n```python\ny = 2\n```", "x = 1\n```python\ny = 2\n"),  # only a bare fence closes
])
def test_extract_code(text, expected):
    assert extract_code(text) == expected


@pytest.mark.parametrize("text", [
    "", "def f(x):\n    return x + 1",                                   # no fence at all
    "```bash\nls\n```",                                                   # no Python block
    "Here: ```python x = 1```",                                           # fences start a line
    "```python\ndef f(x):\n    return x +",                               # cut off inside the block
    FENCED + "\nAnd faster:\n```python\ndef f(x):\n    ret",            # cut off: no fall-back to the first
    FENCED + "\n```text\nsample output",                                  # cut off in another language
])
def test_extract_code_none(text):
    assert extract_code(text) is None


def test_code_program():
    program = code_program("text\n" + FENCED, "import math", "assert f(1) == 2")
    assert program == "import math\ndef f(x):\n    return x + 1\n\nassert f(1) == 2"
    assert code_program("no code here", "import math", "assert f(1) == 2") is None


def test_normalise_code_ignores_layout_comments_and_docstrings():
    plain = "def f(x):\n    return x + 1\n"
    same = ('"""Module doc."""\n# a comment\ndef f( x ):\n    """Adds one."""\n\n    "a bare string"\n'
            "    return (x+1)  # trailing\n")
    assert normalise_code(plain) == normalise_code(same) is not None
    assert normalise_code("class A:\n    'doc'\n    x = 1") == normalise_code("class A:\n    x = 1")
    assert normalise_code("try:\n    'why'\n    x = 1\nexcept E:\n    'note'\n    x = 2") == normalise_code(
        "try:\n    x = 1\nexcept E:\n    x = 2")  # every statement list, not only the first docstring


@pytest.mark.parametrize("a, b", [
    ("def f(x):\n    return x + 1", "def f(y):\n    return y + 1"),       # a rename is another program
    ("x = 'a'", "x = 'b'"),                                               # a string that is used is kept
    ("def f(x):\n    return x + 1", "def f(x):\n    return 1 + x"),
])
def test_normalise_code_tells_apart(a, b):
    assert normalise_code(a) != normalise_code(b)


@pytest.mark.parametrize("code", ["def f(:\n    pass", "x = 1\0", "1" + "+1" * 2000, "-" * 100000 + "1"],
                         ids=["syntax error", "null byte", "too deep to dump", "too deep to parse"])
def test_normalise_code_none(code):
    assert normalise_code(code) is None
