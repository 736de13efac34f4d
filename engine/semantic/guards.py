"""Guards: what a cosine similarity cannot see, checked before a semantic hit is served.

Two prompts can be 0.97 apart and need different answers ("5 miles in km" / "5 km in miles",
"pros" / "cons", "Austria" / "Australia"). A semantic hit therefore needs the similarity
threshold *and* every guard below. Each guard compares one aspect that must be equal for the
two prompts to be answered the same way, and names itself when it refuses:

- `material`: a passage, record or code given to work on must be byte-identical (whitespace
  aside); only the instructions around it may be reworded.
- `numbers`: the same numbers in the same order (digits, number words in seven languages, CJK
  numerals, ordinals), so `15%` equals `fifteen percent` but `97` never equals `91`.
- `negation`: the same count of negations (`not`, `n't`, `no`, `nicht`, `pas`, `不`, `ない`, ...).
- `quotes`: quoted strings (the text to translate, a word to avoid) identical.
- `code`: inline code and fenced blocks identical.
- `entities`: the same capitalised names, programming languages and human languages, with
  languages also in the same order ("English word into German" vs "German word into English").
- `direction`: the same polarity words in the same order (before/after, first/last, asc/desc,
  pros/cons, total/subtotal, 前/后 ...).
- `edit`: a *small edit*: the content words differ by a few words on an otherwise identical
  request (doctor/lawyer, haiku/limerick, rows/columns, winter/summer). A near-identical request
  with a swapped content word is a different request unless the swap is a known equivalence
  (abbreviation, number format, spelling slip); rewordings that share few words are left to the
  similarity threshold. Two content words trading places ("miles to km" / "km to miles") is an
  edit too. Around one shared passage the overlap needed is lower (the passage dominates the
  cosine, so "summarize this email" / "translate this email" must be caught here).

Guards are deliberately conservative: a refused paraphrase costs one upstream call, a wrong hit
serves a wrong answer with full confidence.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from engine.semantic import lexicon as lx

__all__ = ["GUARDS", "Facts", "check", "facts"]

GUARDS = ("material", "numbers", "negation", "quotes", "code", "entities", "direction", "edit")
"""Every guard, in the order they are checked."""

_FENCE = re.compile(r"```.*?(?:```|$)", re.S)
_INLINE = re.compile(r"`[^`\n]+`")
_QUOTED = re.compile(r"(?:(?<![\w])'([^'\n]{2,}?)'(?![\w])|\"([^\"\n]{2,}?)\"|“([^”\n]{2,}?)”|«\s*([^»\n]+?)\s*»"
                     r"|„([^“”\n]+?)[“”]|「([^」\n]+?)」|『([^』\n]+?)』)")
_PARA = re.compile(r"\n\s*\n")
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]|[^\W_\u3040-\u30ff\u3400-\u9fff]+(?:['’][^\W_]+)*", re.U)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITAL = re.compile(r"(?<![.!?:;]\s)(?<!^)(?<!\n)\b([A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*)")
_OPERATION = re.compile(r"(?<![\w-])([\w.^()]{1,6})\s*([-+*/=×÷])\s*([\w.^()]{1,6})(?![\w-])")
_MATERIAL_CHARS = 160  # a paragraph this long (or multi-line) is material, not instruction
_EDIT_SHARE = 0.5  # content overlap above which a difference is a small edit, not a rewording
_EDIT_SHARE_WITH_MATERIAL = 0.3  # the same, for instructions around one shared passage


@dataclass(frozen=True, slots=True)
class Facts:
    """What the guards compare, extracted once per prompt (stored with a cache entry)."""

    material: tuple[str, ...]
    numbers: tuple[str, ...]
    """Numbers as a sorted multiset (clauses may move in a paraphrase)."""
    bound: tuple[str, ...]
    """Each number with the content word after it, sorted: catches numbers trading places."""
    negations: int
    quotes: tuple[str, ...]
    code: tuple[str, ...]
    entities: frozenset[str]
    languages: tuple[str, ...]
    """Human languages named, in order of mention."""
    direction: tuple[str, ...]
    content: tuple[str, ...]
    """Content words of the instruction in order: stop words and pleasantries out, normalised."""
    surface: frozenset[str]
    """Every word of the instruction (stop words included): how close the two wordings are."""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (for persistence next to the vector)."""
        return {"material": list(self.material), "numbers": list(self.numbers), "bound": list(self.bound),
                "negations": self.negations,
                "quotes": list(self.quotes), "code": list(self.code), "entities": sorted(self.entities),
                "languages": list(self.languages), "direction": list(self.direction),
                "content": list(self.content), "surface": sorted(self.surface)}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Facts:
        """Inverse of `to_json`."""
        def strs(key: str) -> tuple[str, ...]:
            value = d.get(key, [])
            return tuple(str(x) for x in value) if isinstance(value, list) else ()

        neg = d.get("negations", 0)
        return cls(material=strs("material"), numbers=strs("numbers"), bound=strs("bound"),
                   negations=neg if isinstance(neg, int) else 0, quotes=strs("quotes"), code=strs("code"),
                   entities=frozenset(strs("entities")),
                   languages=strs("languages"), direction=strs("direction"), content=strs("content"),
                   surface=frozenset(strs("surface")))


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _weight(text: str) -> int:
    """Length in Latin-character equivalents: a CJK character carries about three."""
    return len(text) + 2 * len(_CJK.findall(text))


def _split(text: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(instruction, material paragraphs, code) of a prompt.

    With several paragraphs, the instruction is the shortest one-line paragraph (the request,
    wherever it stands: "<passage>\n\nSummarize this" or "Summarize this:\n\n<passage>"); the
    others are material. A single paragraph is all instruction.
    """
    code = [_norm(m) for m in _FENCE.findall(text)]
    text = _FENCE.sub("\n\n", text)
    code += [_norm(m) for m in _INLINE.findall(text)]
    text = _INLINE.sub(" ", text)
    paras = [p.strip() for p in _PARA.split(text.strip()) if p.strip()]
    if len(paras) <= 1:
        return (paras[0] if paras else ""), (), tuple(code)
    one_line = [i for i, p in enumerate(paras) if "\n" not in p and _weight(p) < _MATERIAL_CHARS * 2]
    pick = min(one_line or range(len(paras)), key=lambda i: (_weight(paras[i]), i))
    material = tuple(sorted(_norm(p) for i, p in enumerate(paras) if i != pick))
    return paras[pick], material, tuple(code)


def _words(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def _numbers(text: str) -> list[tuple[int, int, str]]:
    """(start, end, value) of every number: digits, number words and CJK numerals, canonical strings."""
    found: list[tuple[int, int, str]] = []
    for m in _NUMBER.finditer(text):
        raw = m.group().replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+", m.group()) else m.group()
        try:
            found.append((m.start(), m.end(), _canon(float(raw.replace(",", ".")))))
        except ValueError:
            continue
    for m in lx.NUMBER_WORD_RE.finditer(text.lower()):
        word = lx.number_value(m.group())
        if word is not None:
            found.append((m.start(), m.end(), _canon(word)))
    for m in lx.CJK_NUMERAL_RE.finditer(text):
        cjk = lx.cjk_value(m.group())
        if cjk is not None:
            found.append((m.start(), m.end(), _canon(cjk)))
    found.sort()
    return found


def _bound(text: str, found: list[tuple[int, int, str]]) -> tuple[str, ...]:
    out = []
    for _, end, value in found:
        after = _content(_words(text[end:end + 40]))[:2]
        out.append(f"{value}:{' '.join(after)}")
    return tuple(sorted(out))


def _canon(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(round(value, 6))


def _quotes(text: str) -> tuple[str, ...]:
    out = []
    for m in _QUOTED.finditer(text):
        inner = next(g for g in m.groups() if g is not None)
        out.append(_norm(inner).strip(" .。!?！？").lower())
    return tuple(sorted(out))


def _language_of(word: str) -> str | None:
    code = lx.LANGUAGES.get(word)
    if code is None and len(word) >= 6:  # "Itallian": a slip in a language name still names it
        code = next((c for name, c in lx.LANGUAGES.items() if _fuzzy_equal(word, name)), None)
    return code


def _entities(instr: str, words: list[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    names: set[str] = set()
    # German capitalises every noun: there capitals say nothing about names
    german = sum(1 for w in words if w in lx.GERMAN_HINTS) >= 2
    for m in () if german else _CAPITAL.finditer(instr):
        for part in m.group(1).split():
            low = part.strip("'’-").lower()
            if low.endswith(("'s", "’s")):
                low = low[:-2]
            if (low and low not in lx.STOP and low not in lx.POLITE and _language_of(low) is None
                    and low not in lx.CAPITALISED_COMMON and low not in lx.ABBREVIATIONS and low not in lx.DIRECTION):
                names.add(low)
    names.update(w for w in words if w in lx.PROGRAMMING)
    languages = tuple(code for w in words if (code := _language_of(w)) is not None)
    languages += tuple(code for key, code in lx.CJK_LANGUAGES if key in instr)
    return frozenset(names), tuple(languages)


def _stem(word: str) -> str:
    """A light, language-agnostic stem: enough to match plurals and simple inflections."""
    if len(word) >= 7 and word.isalpha():
        return word[:6]  # summarize/summary, translate/translation; integer/integral stay apart
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _content(words: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for w in words:
        if _CJK.fullmatch(w):
            if w not in lx.CJK_STOP:
                out.append(w)
            continue
        w = lx.ABBREVIATIONS.get(w, w)
        for part in w.split():
            if part in lx.STOP or part in lx.POLITE or lx.NUMBER_WORD_RE.fullmatch(part) or part.isdigit():
                continue
            if part in lx.NEGATORS or _language_of(part) is not None:
                continue
            out.append(_stem(part))
    return tuple(out)


_CASE_ABBR = re.compile(r"\b(" + "|".join(lx.CASE_ABBREVIATIONS) + r")\b")


def _expand(instr: str) -> str:
    instr = unicodedata.normalize("NFKC", instr).replace("’", "'")
    instr = _CASE_ABBR.sub(lambda m: lx.CASE_ABBREVIATIONS[m.group(1)], instr)
    for pattern, repl in lx.PHRASES:
        instr = pattern.sub(repl, instr)
    return instr


def facts(text: str) -> Facts:
    """Extract what the guards compare from one prompt."""
    instr, material, code = _split(text)
    text_n = _expand(instr)
    quotes = _quotes(text_n)
    bare = _QUOTED.sub(" ", text_n)
    words = _words(bare)
    negs = sum(1 for w in words if w in lx.NEGATORS or w.endswith("n't"))
    negs += sum(bare.count(k) for k in lx.CJK_NEGATORS)
    entities, languages = _entities(bare, words)
    direction = [lx.DIRECTION[w] for w in words if w in lx.DIRECTION]
    direction += [v for k, v in lx.CJK_DIRECTION if k in bare]
    found = _numbers(bare)
    ops = [f"op{m.group(2)}" for m in _OPERATION.finditer(bare) if any(c.isdigit() for c in m.group(1) + m.group(3))]
    return Facts(material=material, numbers=tuple(sorted([v for _, _, v in found] + ops)), bound=_bound(bare, found),
                 negations=negs, quotes=quotes, code=code, entities=entities, languages=languages,
                 direction=tuple(sorted(direction)), content=_content(words), surface=frozenset(words))


def _fuzzy_equal(a: str, b: str) -> bool:
    """Same word up to one typo (edit distance 1, or one transposition) for words of 5+ letters."""
    if a == b:
        return True
    if min(len(a), len(b)) < 5 or abs(len(a) - len(b)) > 1 or a[0] != b[0]:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1:]


def _unmatched(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[list[str], list[str]]:
    rest_b = list(b)
    only_a: list[str] = []
    for w in a:
        for j, v in enumerate(rest_b):
            if _fuzzy_equal(w, v):
                del rest_b[j]
                break
        else:
            only_a.append(w)
    return only_a, rest_b


def _swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether `b` is `a` with exactly two content words exchanged (a direction flip)."""
    if len(a) != len(b) or sorted(a) != sorted(b):
        return False
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 2 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def _same_names(a: Facts, b: Facts) -> bool:
    """Entities equal up to a spelling slip; a name the other side spells in lower case still counts."""
    if a.entities == b.entities:
        return True
    only_a, only_b = _unmatched(tuple(sorted(a.entities)), tuple(sorted(b.entities)))
    return all(any(_fuzzy_equal(n, w) for w in b.surface) for n in only_a) and all(
        any(_fuzzy_equal(n, w) for w in a.surface) for n in only_b)


def check(a: Facts, b: Facts) -> str | None:
    """The first guard that refuses to let `b` be served `a`'s answer, or None when all pass."""
    if a.material != b.material:
        return "material"
    if a.numbers != b.numbers:
        return "numbers"
    if a.negations != b.negations:
        return "negation"
    if a.quotes != b.quotes:
        return "quotes"
    if a.code != b.code:
        return "code"
    if sorted(a.languages) != sorted(b.languages) or not _same_names(a, b):
        return "entities"
    if a.direction != b.direction:
        return "direction"
    only_a, only_b = _unmatched(a.content, b.content)
    if not only_a and not only_b:
        # same words: numbers or two words trading places is a different request
        swapped = a.bound != b.bound or a.languages != b.languages or _swapped(a.content, b.content)
        return "edit" if swapped else None
    union = len(a.surface | b.surface)
    # the same passage on both sides dominates the cosine, which then says little about the request
    # around it ("summarize" / "translate" it, "as a memo" / "as a tweet"): with shared material a
    # smaller overlap of the instructions already makes a content word change an edit
    share = _EDIT_SHARE_WITH_MATERIAL if a.material else _EDIT_SHARE
    if union and len(a.surface & b.surface) / union >= share:
        return "edit"  # nearly the same wording with a content word changed, added or dropped
    return None


def same_content(a: Facts, b: Facts) -> bool:
    """Whether the two instructions carry the same content words (so only form differs)."""
    only_a, only_b = _unmatched(a.content, b.content)
    return not only_a and not only_b
