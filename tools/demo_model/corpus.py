"""The training corpus: reStructuredText sources (by default the Python 3.11 documentation of
Debian's ``python3.11-doc``) stripped roughly to prose, one document per file."""

import os
import re
import sys
from typing import List

DEFAULT_CORPUS = "/usr/share/doc/python3.11/html/_sources"

# directives whose whole body is dropped (code, tables of contents, indexes, comments ...)
DROP_DIRECTIVES = {
    "index", "toctree", "code-block", "sourcecode", "code", "highlight", "literalinclude",
    "testcode", "testsetup", "testcleanup", "testoutput", "doctest", "productionlist",
    "image", "figure", "csv-table", "list-table", "table", "raw", "only", "include",
    "moduleauthor", "sectionauthor", "module", "currentmodule", "program", "option",
    "envvar", "opcode", "cmdoption", "audit-event", "audit-event-table", "impl-detail",
    "c:function", "c:macro", "c:type", "c:member", "c:var", "c:struct", "c:data",
    "availability", "grammar-snippet", "rubric", "seealso", "literal", "tabularcolumns",
    "sidebar", "pypi", "default-role",
}
ROLE_RE = re.compile(r":[\w:+.-]+:`([^`]*)`")
LINK_RE = re.compile(r"`([^`<]*?)\s*<[^`>]*>`_{1,2}")
REF_RE = re.compile(r"`([^`]+)`_{1,2}")
LITERAL_RE = re.compile(r"``([^`]*)``")
INTERP_RE = re.compile(r"`([^`]*)`")
EMPH_RE = re.compile(r"(\*\*|\*)(\S(?:.*?\S)?)\1")
SUBST_RE = re.compile(r"\|(\w[\w -]*)\|")
UNDERLINE_RE = re.compile(r"^\s*([=\-~^\"'`#*+_.:<>])\1{2,}\s*$")
TABLE_RE = re.compile(r"^\s*[+|=\-][-=+| ]*$")
DIRECTIVE_RE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")


def _role_text(m):
    text = m.group(1)
    text = re.sub(r"\s*<[^>]*>$", "", text)  # :ref:`label <target>` -> label
    text = text.lstrip("~!")
    if m.group(0).startswith(":") and "." in text and " " not in text and m.group(0).find("~") >= 0:
        text = text.rsplit(".", 1)[-1]
    return text


def inline(text: str) -> str:
    text = ROLE_RE.sub(_role_text, text)
    text = LINK_RE.sub(r"\1", text)
    text = REF_RE.sub(r"\1", text)
    text = LITERAL_RE.sub(r"\1", text)
    text = INTERP_RE.sub(r"\1", text)
    text = EMPH_RE.sub(r"\2", text)
    text = SUBST_RE.sub(r"\1", text)
    text = text.replace("\\ ", "").replace("\\", "")
    return text


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_to_prose(src: str) -> str:
    """Keeps paragraphs of prose, one line each, separated by blank lines."""
    lines = src.expandtabs(8).splitlines()
    paragraphs: List[str] = []
    current: List[str] = []
    skip_indent = -1  # drop lines indented more than this (body of a dropped block)
    literal_next = False  # previous paragraph ended with '::'

    def flush():
        nonlocal literal_next
        if current:
            para = " ".join(s.strip() for s in current)
            para = re.sub(r"\s+", " ", para).strip()
            if para.endswith("::"):
                literal_next = True
                para = para[:-2].rstrip()
                if para and para[-1] not in ".:!?":
                    para += ":"
            para = inline(para)
            # field-list and option lines, bullets of pure markup
            if len(re.sub(r"[^A-Za-z]", "", para)) >= 12:
                paragraphs.append(para)
            current.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        ind = indent_of(line)
        if skip_indent >= 0:
            if not stripped or ind > skip_indent:
                i += 1
                continue
            skip_indent = -1
        if not stripped:
            flush()
            i += 1
            continue
        if literal_next:
            literal_next = False
            base = indent_of(lines[i - 1]) if i > 0 and lines[i - 1].strip() else 0
            # the literal block is the indented block that follows
            if ind > 0 and (not current):
                skip_indent = max(0, ind - 1)
                continue
            del base
        if stripped.startswith(">>>") or stripped.startswith("..."):
            flush()
            skip_indent = ind - 1 if ind > 0 else 0
            # a doctest block runs until the next blank line
            while i < len(lines) and lines[i].strip():
                i += 1
            skip_indent = -1
            continue
        m = DIRECTIVE_RE.match(line)
        if m or stripped.startswith(".. "):
            flush()
            name = m.group(2) if m else ""
            if (not m) or name in DROP_DIRECTIVES or name.startswith("c:"):
                skip_indent = ind
            else:
                # keep the body (note, warning, function descriptions ...), drop the directive
                arg = m.group(3).strip()
                if name in ("note", "warning", "tip", "important", "caution", "attention",
                            "hint", "danger", "error", "admonition", "versionadded",
                            "versionchanged", "deprecated", "deprecated-removed"):
                    if name.startswith("version") or name.startswith("deprecated"):
                        verb = {"versionadded": "New in version",
                                "versionchanged": "Changed in version",
                                "deprecated": "Deprecated since version",
                                "deprecated-removed": "Deprecated since version"}[name]
                        head = arg.split(" ", 1)
                        current.append(verb + " " + head[0] + ("." if len(head) == 1 else ": " + head[1]))
                    elif arg:
                        current.append(arg)
                # option lines (":noindex:") directly under the directive are skipped below
            i += 1
            while i < len(lines) and re.match(r"^\s+:[\w-]+:", lines[i]) and m and \
                    not (skip_indent >= 0):
                i += 1
            continue
        if UNDERLINE_RE.match(line) or TABLE_RE.match(line) and len(stripped) > 3:
            flush()
            i += 1
            continue
        if re.match(r"^\s*:[\w -]+:\s*$", line):  # lone field markers like ':noindex:'
            i += 1
            continue
        # bullets start new paragraphs
        if re.match(r"^\s*([*+-]|\d+\.|#\.)\s+", line) and current:
            flush()
        current.append(re.sub(r"^\s*([*+-]|#\.)\s+", "", line))
        i += 1
    flush()
    return "\n\n".join(paragraphs)


def load_corpus(root: str, skip_dirs=("c-api",)) -> List[bytes]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        for f in sorted(filenames):
            if f.endswith(".txt") or f.endswith(".rst"):
                files.append(os.path.join(dirpath, f))
    if not files:
        sys.exit("no *.txt or *.rst files under %s (apt-get install -y python3.11-doc?)" % root)
    docs = []
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = rst_to_prose(fh.read())
        if len(text) >= 200:
            docs.append(text.encode("utf-8"))
    return docs
