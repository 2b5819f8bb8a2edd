"""The text the demo tokenizer is trained on, generated deterministically from word lists and templates.

The corpus mixes English prose, accented Latin (French, German, Spanish, Portuguese, Polish), Chinese,
Japanese, Korean, emoji, numbers, JSON and Python snippets, so that the trained byte-level BPE has whole
tokens for common words and splits rarer multi-byte characters across several tokens.
"""

from __future__ import annotations

import json
import random


def _words(text: str) -> list[str]:
    return text.split()


NOUNS = _words(
    """
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health person
art war history party result change morning reason research girl guy moment air teacher force education
server request token model cache page batch queue worker router cluster node pod engine kernel tensor
matrix vector layer prompt answer reply message adapter weight bias gradient memory thread process
river mountain forest ocean island garden bridge castle village market harbor valley desert meadow
apple bread cheese coffee lemon onion pepper rice salt sugar tomato butter honey garlic orange
"""
)

VERBS = _words(
    """
run walk read write build send receive open close start stop serve route cache schedule allocate free
compute return load save parse render stream split merge sort count find give take make keep hold
bring carry move turn show tell ask answer call follow lead learn teach grow fall rise sing dance
"""
)

ADJECTIVES = _words(
    """
quick slow bright dark small large happy quiet loud warm cold early late simple complex ancient modern
green blue red yellow purple silver golden heavy light strong gentle clever brave calm busy empty full
"""
)

ADVERBS = _words("quickly slowly quietly carefully often rarely always never soon today tomorrow here there")

NAMES = _words(
    """
Alice Bob Carol David Emma Frank Grace Henry Irene Jack Karen Liam Maria Noah Olivia Paul Quinn Rosa
Sam Tara Uma Victor Wendy Xavier Yara Zoe London Paris Berlin Madrid Tokyo Seoul Beijing Lisbon Warsaw
"""
)

FOREIGN_WORDS = _words(
    """
café crème brûlée naïve façade garçon déjà vu élève château forêt hôpital fenêtre été où très voilà
Müller Straße Grüße schön über Mädchen Größe fröhlich Käse Bäcker weiß heißen Fußball Brötchen
niño mañana señor año corazón canción España jalapeño pingüino acción árbol música teléfono
coração São Paulo informação pão irmã avô não ação
Łódź źdźbło żółw gęś zażółć jaźń Kraków Gdańsk dziękuję proszę
smörgåsbord Ærø Øresund fjörður Þórr
"""
)

CJK_PHRASES = _words(
    """
你好 世界 今天 天气 很好 我们 一起 学习 中文 模型 服务器 缓存 请求 北京 上海 谢谢 朋友 时间 问题 答案
こんにちは ありがとう 東京 日本語 勉強 します 猫 犬 桜 山 川 電車 学校 先生
안녕하세요 감사합니다 서울 한국어 학교 친구
"""
)

EMOJI = _words(
    "😀 😂 🙂 😉 😍 🤔 👍 👋 🙏 🎉 🚀 🔥 ✨ 🌍 🌸 🍕 ☕ 🐍 🐱 🐶 ❤️ ✅ ❌ ⭐ 💡 📦 🧪 🦀 🇫🇷 🇯🇵 👩‍💻"
)

GREETINGS = _words("Hi Hello Hey Thanks Please Sorry OK Yes No Bonjour Hallo Hola Olá Cześć")

SYLLABLES = _words(
    """
ka ri to mo na se lu vi pe do za mi ro ta ne ku sha tre vel mar lin gor bel dra fen kos pra ul ix
"""
)

SENTENCE_TEMPLATES = [
    "The {adj} {noun} will {verb} the {noun2} {adv}.",
    "{name} wants to {verb} a {adj} {noun} before the {noun2}.",
    "Why does the {noun} {verb} so {adv}?",
    "In {name}, every {noun} can {verb} {num} {noun2}s.",
    '{name} said: "{foreign} {foreign2}!" and smiled {emoji}',
    "{cjk}{cjk2}，{cjk3}。",
    "Please {verb} the {adj} {noun} and {verb2} it {adv}.",
    "We measured {num} {noun}s per {noun2} at {float} ms.",
    "{emoji} {name} and {name2} {verb} the {foreign} together {emoji2}",
    "Note {num}: the {noun} is {adj}, not {adj2}.",
]


def _pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        adj=rng.choice(ADJECTIVES),
        adj2=rng.choice(ADJECTIVES),
        noun=rng.choice(NOUNS),
        noun2=rng.choice(NOUNS),
        verb=rng.choice(VERBS),
        verb2=rng.choice(VERBS),
        adv=rng.choice(ADVERBS),
        name=rng.choice(NAMES),
        name2=rng.choice(NAMES),
        foreign=rng.choice(FOREIGN_WORDS),
        foreign2=rng.choice(FOREIGN_WORDS),
        cjk=rng.choice(CJK_PHRASES),
        cjk2=rng.choice(CJK_PHRASES),
        cjk3=rng.choice(CJK_PHRASES),
        emoji=rng.choice(EMOJI),
        emoji2=rng.choice(EMOJI),
        num=rng.randint(0, 99999),
        float=f"{rng.uniform(0, 1000):.2f}",
    )


def _json_snippet(rng: random.Random) -> str:
    record = {
        "name": rng.choice(NAMES),
        "age": rng.randint(1, 99),
        "city": rng.choice(NAMES),
        "tags": [rng.choice(NOUNS) for _ in range(rng.randint(0, 3))],
        "active": rng.random() < 0.5,
        "score": round(rng.uniform(0, 100), 2),
        "note": None if rng.random() < 0.3 else rng.choice(FOREIGN_WORDS),
    }
    return json.dumps(record, ensure_ascii=False, indent=rng.choice([None, 2]))


def _code_snippet(rng: random.Random) -> str:
    fn, arg, other = rng.choice(VERBS), rng.choice(NOUNS), rng.choice(NOUNS)
    return (
        f"def {fn}_{arg}({arg}, {other}=None):\n"
        f"    if {other} is None:\n"
        f"        return [{arg}] * {rng.randint(2, 9)}\n"
        f"    return {{'{arg}': {arg}, '{other}': {other}}}\n"
    )


def _chat_snippet(rng: random.Random) -> str:
    """Role names and short turns, as they appear between ChatML markers."""
    greeting = rng.choice(GREETINGS)
    question = _fill(rng.choice(SENTENCE_TEMPLATES), rng)
    answer = _fill(rng.choice(SENTENCE_TEMPLATES), rng)
    return f"system\nYou are a helpful assistant.\nuser\n{greeting} {question}\nassistant\n{answer}\ntool\n"


def build_corpus(num_lines: int = 6000, seed: int = 1234) -> list[str]:
    """Lines of mixed-language text; the same arguments always give the same lines."""
    rng = random.Random(seed)
    lines = []
    for index in range(num_lines):
        kind = index % 10
        if kind < 6:
            lines.append(" ".join(_fill(rng.choice(SENTENCE_TEMPLATES), rng) for _ in range(3)))
        elif kind == 6:
            lines.append(_json_snippet(rng))
        elif kind == 7:
            lines.append(_code_snippet(rng))
        elif kind == 8:
            lines.append(_chat_snippet(rng))
        else:
            words = [_pseudo_word(rng) for _ in range(rng.randint(8, 20))]
            lines.append(" ".join(words).capitalize() + ".")
    return lines
