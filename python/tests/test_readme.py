"""The README's Python example runs as written."""
import pathlib
import re


def test_readme_python_example_runs():
    text = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README.md has no python example"
    env = {}
    exec(compile(blocks[0], "README.md", "exec"), env)
    assert env["o"].shape == (1, 1024, 4, 64) and env["q"].grad is not None
    assert env["token"].shape == (2,)
