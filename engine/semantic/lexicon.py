"""Word lists the guards use: stop words, pleasantries, negations, polarity words, languages,
number words and common abbreviations, for English, Spanish, German, French, Portuguese, Italian,
Japanese and Chinese. General vocabulary only: nothing here is taken from a test set."""

from __future__ import annotations

import re

__all__ = [
    "ABBREVIATIONS", "CAPITALISED_COMMON", "CASE_ABBREVIATIONS", "CJK_DIRECTION", "CJK_LANGUAGES", "CJK_NEGATORS",
    "CJK_NUMERAL_RE", "CJK_STOP", "DIRECTION", "GERMAN_HINTS", "LANGUAGES", "NEGATORS", "NUMBER_WORD_RE", "PHRASES", "POLITE",
    "PROGRAMMING", "STOP", "cjk_value", "number_value",
]


def _words(*groups: str) -> frozenset[str]:
    return frozenset(w for g in groups for w in g.split())


STOP = _words(
    # en
    "a an the this that these those of in on at to for from by with about into onto as is are was were be been "
    "being am do does did doing have has had having it its it's i i'd i'm i'll i've me my mine you your you're "
    "we our us they them their he she his her him what what's whats which who whom whose when where why how "
    "can could would should will shall may might must and or but if then so than too very just also "
    "there here out up get got give gave tell show let let's make want need like kindly such own same other "
    "one's please",
    # es
    "el la los las un una unos unas de del al en y o que es son por para con se su sus lo como qué cómo cuál "
    "cuánto me mi te tu este esta esto ese esa",
    # de
    "der die das den dem des ein eine einen einem einer und oder ist sind im in am zu mit von für auf aus wie "
    "was mir mich ich du dir bitte",
    # fr
    "le la les un une des du de et ou est sont en au aux dans pour par sur avec ce cet cette ces je tu moi toi "
    "me te qu que quel quelle quels quelles comment",
    # pt
    "o a os as um uma uns umas do da dos das no na nos nas em e ou é são por para com se seu sua eu",
)
POLITE = _words(
    "please pls plz thanks thank thx ty hi hello hey sorry bother appreciate appreciated grateful much so really "
    "kind kindly help mind hope great day good lot advance for me would could can you tell whether favor "
    "por favor gracias hola bitte danke hallo merci bonjour s'il vous plaît obrigado obrigada olá",
)
NEGATORS = _words("not no never none nobody nothing neither nor without cannot can't won't don't doesn't didn't "
                  "isn't aren't wasn't weren't shouldn't wouldn't couldn't haven't hasn't hadn't "
                  "nicht kein keine keinen keiner nie ohne ne pas jamais sans nunca sin ningún ninguna nem não sem")
CJK_NEGATORS = ("不", "没", "沒", "無", "无", "ない", "ません", "なく", "別", "非")
DIRECTION = {
    w: k for k, ws in {
        "before": "before prior earlier ago vor avant antes",
        "after": "after later since nach après después depois",
        "first": "first earliest erste premier primero primeiro",
        "last": "last latest final letzte dernier último",
        "asc": "ascending increasing aufsteigend croissant ascendente",
        "desc": "descending decreasing absteigend décroissant descendente",
        "pro": "pros pro advantages benefits upside upsides vorteile avantages ventajas vantagens",
        "con": "cons con disadvantages drawbacks downside downsides risks nachteile inconvénients desventajas",
        "more": "larger largest bigger biggest higher highest older oldest longer longest taller tallest "
                "max maximum greater greatest",
        "less": "fewer fewest smaller smallest lowest younger youngest shorter shortest minimum",
        "upper": "uppercase majuscules mayúsculas maiúsculas großbuchstaben",
        "lower": "lowercase minuscules minúsculas kleinbuchstaben",
        "all": "all every each",
        "some": "some several few",
        "left": "left links gauche izquierda esquerda",
        "right": "right rechts droite derecha direita",
        "open": "open opens opening abre ouvre öffnet",
        "close": "close closes closing closed cierra ferme schließt",
        "like": "liked likes loved",
        "dislike": "disliked dislikes hated",
        "approve": "approve approved accept accepted",
        "reject": "reject rejected decline declined",
        "total": "total",
        "subtotal": "subtotal",
        "plus": "plus add mais más",
        "minus": "minus subtract menos",
        "times": "times multiply multiplied vezes",
        "divide": "divide divided",
        "remote": "remote",
        "local": "local",
        "positive": "positive cheerful happy",
        "negative": "negative sad",
    }.items() for w in ws.split()
}
CJK_DIRECTION = (("以前", "before"), ("以後", "after"), ("之前", "before"), ("之后", "after"), ("前", "before"),
                 ("后", "after"), ("後", "after"), ("最初", "first"), ("最後", "last"), ("最后", "last"),
                 ("大", "more"), ("小", "less"))
LANGUAGES = {
    w: k for k, ws in {
        "en": "english inglés ingles englisch englische englischen anglais inglês inglese",
        "es": "spanish español espanol spanisch spanische espagnol espanhol spagnolo castellano",
        "de": "german alemán aleman deutsch deutsche deutschen allemand alemão tedesco",
        "fr": "french francés frances französisch französische français francais francês francese",
        "pt": "portuguese portugués portugues portugiesisch portugais português portoghese",
        "it": "italian italiano italienisch italien italiano",
        "ja": "japanese japonés japones japanisch japonais japonês giapponese",
        "zh": "chinese chino chinesisch chinois chinês cinese mandarin",
        "nl": "dutch neerlandés niederländisch néerlandais holandês",
        "ko": "korean coreano koreanisch coréen",
        "ru": "russian ruso russisch russe russo",
        "ar": "arabic árabe arabisch arabe",
        "hi": "hindi",
        "sv": "swedish sueco schwedisch suédois",
        "no": "norwegian noruego norwegisch norvégien",
        "pl": "polish polaco polnisch polonais",
        "tr": "turkish turco türkisch turc",
        "el": "greek griego griechisch grec",
        "he": "hebrew hebreo hebräisch hébreu",
    }.items() for w in ws.split()
}
CJK_LANGUAGES = (("英文", "en"), ("英语", "en"), ("英語", "en"), ("中文", "zh"), ("汉语", "zh"), ("中国語", "zh"),
                 ("日语", "ja"), ("日文", "ja"), ("日本語", "ja"), ("法语", "fr"), ("フランス語", "fr"),
                 ("德语", "de"), ("ドイツ語", "de"), ("西班牙语", "es"), ("スペイン語", "es"), ("韩语", "ko"))
PROGRAMMING = _words("python java javascript typescript golang kotlin php perl scala haskell c++ c# csharp cpp "
                     "elixir erlang clojure matlab powershell sql fortran cobol")
"""Programming languages recognised in lower case; Go, Rust, Swift, R, C... count only capitalised."""
CAPITALISED_COMMON = _words("ok okay yes no true false json yaml xml csv html css api")
# Lower-case abbreviations and spellings that stand for the same thing.
ABBREVIATIONS = {
    "js": "javascript", "ts": "typescript", "py": "python", "golang": "go", "db": "database",
    "dba": "database administrator", "dbs": "database", "postgres": "postgresql", "regex": "regular expression",
    "regexp": "regular expression", "lcm": "least common multiple", "gcd": "greatest common divisor",
    "diff": "difference", "msg": "message", "bday": "birthday", "bff": "best friend", "info": "information",
    "approx": "approximately", "u": "you", "ur": "your", "pic": "picture", "pics": "picture", "docs": "documentation",
    "doc": "document", "config": "configuration", "repo": "repository", "func": "function", "fn": "function",
    "min": "minute", "mins": "minute", "hr": "hour", "hrs": "hour", "sec": "second", "km": "kilometer",
    "kilometre": "kilometer", "kilometres": "kilometer", "kilometers": "kilometer", "mi": "mile", "kg": "kilogram",
    "lb": "pound", "lbs": "pound", "cm": "centimeter", "mm": "millimeter", "l": "liter", "litre": "liter",
    "litres": "liter", "liters": "liter", "ml": "milliliter", "ft": "foot", "feet": "foot", "in.": "inch",
    "°c": "celsius", "°f": "fahrenheit", "tldr": "summary", "eu": "european union", "ai": "artificial intelligence",
    "whats": "what", "ther": "there", "bdays": "birthday", "cuz": "because", "bc": "because", "w": "with",
    "asap": "as soon as possible", "faq": "frequently asked questions", "id": "identifier", "os": "operating system",
    "ui": "user interface", "url": "address", "urls": "address",
}
CASE_ABBREVIATIONS = {"US": "United States", "USA": "United States", "UK": "United Kingdom", "UN": "United Nations",
                      "EN": "English", "DE": "German", "FR": "French", "ES": "Spanish", "IT": "Italian",
                      "PT": "Portuguese", "JP": "Japanese", "ZH": "Chinese", "CN": "Chinese", "NL": "Dutch"}
PHRASES = (
    (re.compile(r"\btl;?dr\b|\btoo[- ]long[,;]?[- ]did(?:n'?t|\s+not)[- ]read\b", re.I), "tldr"),
    (re.compile(r"\bw/o\b", re.I), "without"),
    (re.compile(r"\bw/(?=\s)", re.I), "with"),
    (re.compile(r"\bno\.(?=\s)", re.I), "number"),
    (re.compile(r"\s*\b(?:percent|per cent|por ciento|por cento|prozent|pour cent|pourcent)\b", re.I), " %"),
)
GERMAN_HINTS = _words("der die das den dem des und ist nicht ich du mir mich bitte einen einem eines diesem dieser "
                      "diese im zum zur")
CJK_STOP = frozenset("的了是在我你他她它们这那个吗呢吧和与及请把下面中从用将被给を的はがにでとへもやのてしたすますかなれるいうこ、。？！：「」“”")

_UNITS = {"zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
          "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
          "half": 0.5, "dozen": 12,
          # ordinals (first/second/last are polarity words, not numbers)
          "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
          "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14, "fifteenth": 15, "sixteenth": 16,
          "seventeenth": 17, "eighteenth": 18, "nineteenth": 19, "twentieth": 20,
          # es / pt / it
          "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8, "nueve": 9,
          "diez": 10, "once": 11, "doce": 12, "veinte": 20, "treinta": 30, "cuarenta": 40, "cincuenta": 50,
          "cien": 100, "dois": 2, "duas": 2, "três": 3, "quatro": 4, "sete": 7, "oito": 8,
          "nove": 9, "dez": 10, "vinte": 20, "trinta": 30, "cem": 100, "due": 2, "tre": 3, "dieci": 10,
          # de
          "zwei": 2, "drei": 3, "vier": 4, "fünf": 5, "sechs": 6, "sieben": 7, "acht": 8, "neun": 9,
          "zehn": 10, "elf": 11, "zwölf": 12, "zwanzig": 20, "dreißig": 30, "vierzig": 40, "fünfzig": 50,
          "hundert": 100,
          # fr
          "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "sept": 7, "huit": 8, "neuf": 9, "dix": 10, "onze": 11,
          "douze": 12, "vingt": 20, "trente": 30, "quarante": 40, "cinquante": 50}
NUMBER_WORD_RE = re.compile(
    r"\b(?:" + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True)) + r")"
    r"(?:[- ](?:" + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True)) + r"))*"
    r"(?: and a half)?\b", re.I)


def number_value(phrase: str) -> float | None:
    """The value of a number-word phrase ("twenty-two", "two and a half", "sixteenth"), else None."""
    half = phrase.endswith(" and a half")
    if half:
        phrase = phrase[: -len(" and a half")]
    total, current = 0.0, 0.0
    for word in re.split(r"[- ]", phrase.lower()):
        value = _UNITS.get(word)
        if value is None:
            return None
        if value in (100, 1000) and word not in ("cien", "cem", "cent"):
            current = (current or 1) * value
            if value == 1000:
                total, current = total + current, 0.0
        else:
            current += value
    return total + current + (0.5 if half else 0.0)


_CJK_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
               "八": 8, "九": 9}
_CJK_SCALE = {"十": 10, "百": 100, "千": 1000, "万": 10000, "萬": 10000}
CJK_NUMERAL_RE = re.compile("[零〇一二两兩三四五六七八九十百千万萬]+")


def cjk_value(s: str) -> float | None:
    """The value of a CJK numeral ("十二", "二十", "五"), else None."""
    total, digit = 0, 0
    for ch in s:
        if ch in _CJK_DIGITS:
            digit = _CJK_DIGITS[ch]
        else:
            scale = _CJK_SCALE[ch]
            total += (digit or 1) * scale
            digit = 0
    return float(total + digit)
