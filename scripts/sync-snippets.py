#!/usr/bin/env python3
"""Rewrites every documentation block that quotes a source file from that file.

A fenced ```cpp block whose first line is `// snippet: <path>` (README.md, docs/*.md) is
replaced by the current text of <path>. The files are built and run by CTest
(tests/docs), and tests/docs/check_snippets.cmake fails when a block and its file differ;
run this after editing or formatting a snippet file.
"""
import glob
import os
import re
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pattern = re.compile(r"```cpp\n// snippet: ([^\n]+)\n.*?```", re.S)
changed = 0
for doc in [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md"))):
    text = open(doc).read()

    def repl(m):
        return "```cpp\n" + open(os.path.join(root, m.group(1))).read() + "```"

    new = pattern.sub(repl, text)
    if new != text:
        open(doc, "w").write(new)
        changed += 1
        print(f"updated {os.path.relpath(doc, root)}")
sys.exit(0)
