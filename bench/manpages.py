"""Manual pages as a known-item search corpus (pure, except ``read_page``/``man_files``).

A page's NAME line (``ls \\- list directory contents``) gives the query (``list directory
contents``); the document is the rest of the page rendered to plain text, NAME section removed
(else the query matches its own words verbatim), titled by the page's name (``ls``).

Rendering is done here in Python rather than by groff: groff hyphenates and justifies
(``speci- fied`` splits a word at a line's end), its output depends on its version, and it costs about 0.1 to 0.4 s
a page on a loaded machine. ``render`` handles the man(7) and mdoc(7) macros, tbl blocks and the
escapes pages use; what it does not know it drops (a request line) or keeps as text.

    man_files(dirs)          the page files (.gz), symlinks and ``.so`` redirects resolved away
    parse_page(name, roff)   -> Page(name, description, text) or None (no usable NAME)
    choose_pages(...)        a seeded, deterministic sample: unique descriptions, no family over 5 %,
                             sorted by name
    corpus_checksum(pages)   sha256 over names, queries and texts: runs with equal sums compare
"""

from __future__ import annotations

import gzip
import hashlib
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAN_DIRS = (Path("/usr/share/man/man1"), Path("/usr/share/man/man8"))


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


# \(xx and \[name] glyphs that carry meaning in text; any other is dropped.
GLYPHS = {
    "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'", "em": "-", "en": "-", "hy": "-",
    "mi": "-", "pl": "+", "bu": "*", "co": "(c)", "rg": "(R)", "tm": "(TM)", "ga": "`", "ha": "^", "ti": "~",
    "rs": "\\", "sl": "/", "ba": "|", "or": "|", "lh": "<=", "rh": "=>", "->": "->", "<-": "<-", "da": "v",
    "ua": "^", "eq": "=", "<=": "<=", ">=": ">=", "mu": "x", "de": " degrees", "Fo": "<<", "Fc": ">>",
    "fo": "<", "fc": ">", "bv": "|", "at": "@", "sh": "#", "Do": "$", "ct": "c", "ss": "ss",
}
STRINGS = {"lq": '"', "rq": '"', "R": "(R)", "Tm": "(TM)", "Aq": "'"}

# mdoc macros that can be called on a line; their names are dropped, Fl prefixes a dash.
MDOC_CALLABLE = _names(
    "Ac Ad An Ao Ap Aq Ar At Bc Bo Bq Brc Bro Brq Bsx Bx Cd Cm Dc Do Dq Dv Dx Ec Em Eo Er Es Ev Fa Fc Fl "
    "Fn Fo Fr Fx Ic In Li Lk Ms Mt Nm No Ns Nx Oc Oo Op Ox Pa Pc Pf Po Pq Qc Ql Qo Qq Sc Sh So Sq Ss St "
    "Sx Sy Ta Tn Ux Va Vt Xc Xo Xr Ft Nd It Dl D1 Ev Lb Rv Ex Re Rs %A %B %D %I %J %N %O %P %R %T %V Tg"
)
# man/mdoc requests whose line carries no text.
SILENT = _names(
    "TH Dd Dt Os de ds nr so ta ti in ll ne ps vs ft fam hy nh ad na ce cs bp ig rm rn as am tr ev if ie "
    "el ns rs mk rt pc lf cc c2 eo ec ch wh it em tl pl po mc lt hw HP PD UC AT DT Bd Ed Bl El Bf Ef Ek "
    "Bk Rd EE EX ME UE MT UR OP YS SY ds1 IX"
)
BREAKS = _names("PP LP P br sp TP IP RS RE nf fi Pp Lp It Sh Ss SH SS")
ALTERNATING = _names("BR RB IR RI BI IB")
FONT_ONE = _names("B I SM SB R CW")

_ESCAPE = re.compile(
    r"""\\(?:
        f(?:\[[^\]]*\]|\(..|.)          # font change
      | s[+-]?(?:\[[^\]]*\]|\(..|'[^']*'|\d\d?)   # size change
      | [*](?:\[(?P<sb>[^\]]*)\]|\((?P<sp>..)|(?P<s1>.))   # string
      | n[+-]?(?:\[[^\]]*\]|\(..|.)     # number register
      | [hvwlLoDbxXZkMm]'[^']*'         # motions, width, drawing, marks
      | [kMm](?:\[[^\]]*\]|\(..|.)
      | \[(?P<gb>[^\]]*)\]              # glyph by name
      | \((?P<gp>..)                    # glyph, two characters
      | (?P<one>.)
    )""",
    re.VERBOSE,
)
_ONE = {"-": "-", "e": "\\", "\\": "\\", "~": " ", " ": " ", "0": " ", "t": " ", ".": ".", "'": "'", "`": "`",
        '"': "", "&": "", "|": "", "^": "", "c": "", "%": "", ")": "", "/": "", ",": "", "p": "", "{": "", "}": "",
        "a": "", "d": "", "u": "", "r": "", "z": "", "!": "", "?": "", ":": "", "N": ""}


def _unescape(m: re.Match[str]) -> str:
    if m.group("one") is not None:
        return _ONE.get(m.group("one"), m.group("one"))
    glyph = m.group("gb") or m.group("gp")
    if glyph is not None:
        if glyph.startswith(("u", "char")) and glyph[1:].isalnum():
            code = glyph[1:] if glyph.startswith("u") else glyph[4:]
            try:
                return chr(int(code, 16) if glyph.startswith("u") else int(code))
            except ValueError:
                return ""
        return GLYPHS.get(glyph, "")
    string = m.group("sb") or m.group("sp") or m.group("s1")
    if string is not None:
        return STRINGS.get(string, "")
    return ""


def unescape(text: str) -> str:
    """``text`` with roff escapes replaced by what they print (``\\fBls\\fR \\- x`` → ``ls - x``)."""
    if '\\"' in text:  # a comment runs to the end of the line
        text = re.sub(r'(?<!\\)\\".*', "", text)
    return _ESCAPE.sub(_unescape, text)


def _args(line: str) -> list[str]:
    """A macro line's arguments: words, or double-quoted strings (``""`` is a quote inside one)."""
    out: list[str] = []
    for m in re.finditer(r'"((?:[^"]|"")*)"?|(\S+)', line):
        out.append(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2))
    return out


def _mdoc_words(args: list[str]) -> str:
    words: list[str] = []
    dash = False
    for a in args:
        if a in MDOC_CALLABLE:
            dash = a == "Fl"
            if dash:
                words.append("-")
            continue
        words.append(("-" if dash and words and words[-1] != "-" else "") + a)
        dash = False
    text = " ".join(words)
    return re.sub(r"- (?=\S)", "-", text).replace(" - -", " --")


def render(roff: str, title: str = "") -> str:
    """The page as plain text: one line per paragraph, heading, no-fill line or table row, words
    joined by single spaces; ``title`` is what a bare mdoc ``.Nm`` prints."""
    lines: list[str] = []
    current: list[str] = []
    skip_until: str | None = None
    in_table = False
    table_format = False
    tab = "\t"
    in_cell = False
    no_fill = False

    def flush() -> None:
        if current:
            lines.append(" ".join(" ".join(current).split()))
            current.clear()

    for raw in roff.splitlines():
        if skip_until is not None:
            if raw.strip().startswith(skip_until):
                skip_until = None
            continue
        if in_table:
            if raw.startswith(".TE"):
                in_table = False
                flush()
                continue
            if table_format:
                found = re.search(r"tab\s*\((.)\)", raw)
                tab = found.group(1) if found else tab
                table_format = not raw.rstrip().endswith(".")
                continue
            if raw.startswith((".", "'")) and not raw.startswith(("T{", "T}")):
                continue  # a request inside the table (.sp, .T&, …)
            in_cell = raw.rstrip().endswith("T{") or (in_cell and not raw.startswith("T}"))
            cells = [unescape(c) for c in raw.replace("T{", "").replace("T}", "").split(tab)]
            current.append(" ".join(c for c in cells if c.strip()))
            if not in_cell:
                flush()
            continue
        if raw.startswith((".", "'")):
            body = raw[1:].lstrip()
            if body.startswith('\\"') or not body:
                continue
            name, _, rest = body.partition(" ")
            name = name.strip()
            if name in ("de", "de1", "am", "ig"):
                skip_until = ".." if name != "ig" or not rest.strip() else "." + rest.strip()
                continue
            if name == "TS":
                flush()
                in_table, table_format, tab = True, True, "\t"
                continue
            if name in ("nf", "EX", "Bd"):
                no_fill = name != "Bd" or "-literal" in rest or "-unfilled" in rest
            elif name in ("fi", "EE", "Ed"):
                no_fill = False
            args = [unescape(a) for a in _args(rest)]
            if name in BREAKS:
                flush()
            if name in ("SH", "SS", "Sh", "Ss"):
                lines.append(" ".join(args).strip())
                continue
            if name == "IP" and args:
                current.append(args[0])
            elif name in ALTERNATING:
                current.append("".join(args))
            elif name in FONT_ONE:
                current.append(" ".join(args))
            elif name == "Nm" and not args:
                current.append(title)
            elif name in MDOC_CALLABLE:
                words = _mdoc_words(([name] if name == "Fl" else []) + args)
                if name == "Op":
                    words = f"[{words}]"
                if words:
                    current.append(words)
            elif name in SILENT or name in BREAKS:
                continue
            continue  # an unknown request prints nothing
        text = unescape(raw)
        if not text.strip():
            flush()
            continue
        current.append(text)
        if no_fill:
            flush()
    flush()
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class Page:
    name: str  # the file's page name without section: ``ls``
    query: str  # the NAME line's description
    text: str  # the page rendered, NAME section removed


_NAME_HEAD = re.compile(r'^[.\']\s*S[Hh]\s+"?(NAME|Name|NOM|NOMBRE|名前)"?\s*$')
_SECTION_HEAD = re.compile(r"^[.']\s*S[Hh]\b")


def split_name_section(roff: str) -> tuple[list[str], str] | None:
    """(the NAME section's lines, the page without them), or None if the page has no NAME section."""
    lines = roff.splitlines()
    for i, line in enumerate(lines):
        if _NAME_HEAD.match(line.strip()):
            end = next((j for j in range(i + 1, len(lines)) if _SECTION_HEAD.match(lines[j].strip())), len(lines))
            return lines[i + 1 : end], "\n".join(lines[:i] + lines[end:])
    return None


def description(name_lines: Sequence[str]) -> str:
    """The description of a NAME section: the text after the first `` - `` (man) or ``.Nd`` (mdoc),
    escapes rendered, whitespace collapsed; ``""`` if there is none."""
    for line in name_lines:
        stripped = line.strip()
        if stripped.startswith((".Nd ", "'Nd ")):
            return " ".join(unescape(stripped[4:]).split())
    text = render("\n".join(name_lines))
    flat = " ".join(text.split())
    for sep in (" - ", " -- ", " — "):
        if sep in flat:
            return flat.split(sep, 1)[1].strip()
    return ""


def parse_page(name: str, roff: str) -> Page | None:
    """The page as a (title, query, document) triple; None when it has no NAME description or no
    text beyond it."""
    split = split_name_section(roff)
    if split is None:
        return None
    name_lines, rest = split
    query = description(name_lines)
    text = render(rest, name)
    if not query or not text:
        return None
    return Page(name, query, text)


def page_name(path: Path) -> str:
    """``/usr/share/man/man1/ls.1.gz`` → ``ls``; ``CA.pl.1ssl.gz`` → ``CA.pl``."""
    stem = path.name.removesuffix(".gz")
    return re.sub(r"\.[1-9][a-zA-Z0-9]*$", "", stem)


def read_page(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def man_files(dirs: Iterable[Path] = MAN_DIRS) -> list[Path]:
    """Regular page files under ``dirs``, sorted by path; symlinks (aliases of another page) left out."""
    files: list[Path] = []
    for d in dirs:
        if d.is_dir():
            files.extend(p for p in d.iterdir() if p.is_file() and not p.is_symlink())
    return sorted(files)


def family(name: str) -> str:
    """A page's family: its name up to the first ``_`` (``gcloud_alpha_compute_disks_list`` → ``gcloud``)."""
    return name.split("_", 1)[0]


def family_cap(n: int) -> int:
    """The most pages one family may give a corpus of ``n``: 5 %, at least 1."""
    return max(1, n // 20)


def choose_pages(files: Sequence[Path], n: int, seed: int,
                 read: Callable[[Path], str] = read_page) -> list[Page]:
    """``n`` pages drawn in a seeded order from ``files``, sorted by name. A page is skipped when it
    has no usable NAME line, is a ``.so`` redirect, its name, description or text was already
    taken (an alias or a copy: its query would have two right answers), or its family already
    gave ``family_cap(n)`` pages (one package's generated pages, such as the 16,000 ``gcloud_*`` of
    google-cloud-cli, would otherwise make most of the corpus)."""
    order = list(files)
    random.Random(seed).shuffle(order)
    chosen: list[Page] = []
    seen: set[str] = set()
    families: dict[str, int] = {}
    cap = family_cap(n)
    for path in order:
        if len(chosen) >= n:
            break
        if families.get(family(page_name(path)), 0) >= cap:
            continue
        roff = read(path)
        if roff.lstrip().startswith(".so "):
            continue
        page = parse_page(page_name(path), roff)
        if page is None:
            continue
        keys = (f"n:{page.name}", f"q:{page.query.casefold()}", f"t:{page.text}")
        if any(k in seen for k in keys):
            continue
        seen.update(keys)
        families[family(page.name)] = families.get(family(page.name), 0) + 1
        chosen.append(page)
    return sorted(chosen, key=lambda p: p.name)


def corpus_checksum(pages: Sequence[Page]) -> str:
    h = hashlib.sha256()
    for p in pages:
        for part in (p.name, p.query, p.text):
            h.update(part.encode())
            h.update(b"\0")
    return h.hexdigest()
