"""Regenerate the README's demo outputs under the installed versions (bash .ci/update-pins runs it).

Runs the offline demo twice (ProGRPO at the default alpha, then --alpha 0 = GRPO) and rewrites the text
between the README's `<!-- outputs:demo -->` / `<!-- /outputs:demo -->` and `<!-- outputs:grpo -->` /
`<!-- /outputs:grpo -->` markers, and the test line between `<!-- outputs:tests -->` markers when
a pytest log is given:  python .ci/readme_outputs.py [PYTEST_LOG]
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(*flags) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "progrpo.py", "--out", f"{tmp}/run", *flags], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    return [line.replace(f"{tmp}/run", "runs/tiny-demo") for line in out.splitlines()]


def replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- outputs:{name} -->\n).*?(\n<!-- /outputs:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: README.md has no <!-- outputs:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main():
    lines = run_demo()
    steps = [i for i, line in enumerate(lines) if line.startswith("step ")]
    header = lines[0][:lines[0].rfind(", ", 0, 120)] + ", ... }"  # the flags as JSON, cut at a field
    shown = [header, *lines[1:steps[0]], *lines[steps[0]:steps[0] + 3], "...", *lines[steps[-1] - 1:]]
    demo = "```text\n" + "\n".join(shown) + "\n```"
    grpo = run_demo("--alpha", "0")[-1]
    found = dict(re.findall(r"(accuracy|entropy|prompt) ([0-9.]+)", grpo))
    sentence = (f"With `--alpha 0` (plain GRPO) the same run ends at accuracy {found['accuracy']}, entropy "
                f"{found['entropy']} and **{found['prompt']}** distinct correct answers per prompt.")
    readme = (ROOT / "README.md").read_text()
    readme = replace(replace(readme, "demo", demo), "grpo", sentence)
    if len(sys.argv) > 1:
        last = [line for line in Path(sys.argv[1]).read_text().splitlines() if " passed" in line][-1]
        readme = replace(readme, "tests", f"```text\n{last.strip()}\n```")
    (ROOT / "README.md").write_text(readme)
    print("\n".join(shown), "\n" + grpo)


if __name__ == "__main__":
    main()
