"""Hand-written toy English -> French grammar used to build the bundled tiny model.

This is "the text the project ships": a small bilingual vocabulary (nouns with
gender, adjectives with French position and agreement, verbs in the third person
singular present, definite/indefinite determiners) and a seeded generator of short
English phrases and sentences with their French translations, e.g.

    "the black cat sleeps"  ->  "le chat noir dort"
    "a small house"         ->  "une petite maison"
    "the dog sees the tree" ->  "le chien voit l'arbre"

Everything is deterministic given a ``random.Random`` seed. Nothing here needs
torch or transformers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------

# english, french, gender ("m"/"f"); elision (l') is derived from the first letter.
NOUNS: list[tuple[str, str, str]] = [
    ("cat", "chat", "m"),
    ("dog", "chien", "m"),
    ("bird", "oiseau", "m"),
    ("horse", "cheval", "m"),
    ("fish", "poisson", "m"),
    ("mouse", "souris", "f"),
    ("cow", "vache", "f"),
    ("girl", "fille", "f"),
    ("boy", "garçon", "m"),
    ("man", "homme", "m"),
    ("woman", "femme", "f"),
    ("child", "enfant", "m"),
    ("teacher", "professeur", "m"),
    ("friend", "ami", "m"),
    ("house", "maison", "f"),
    ("car", "voiture", "f"),
    ("tree", "arbre", "m"),
    ("flower", "fleur", "f"),
    ("book", "livre", "m"),
    ("table", "table", "f"),
    ("door", "porte", "f"),
    ("window", "fenêtre", "f"),
    ("apple", "pomme", "f"),
    ("bread", "pain", "m"),
    ("cake", "gâteau", "m"),
    ("chair", "chaise", "f"),
    ("boat", "bateau", "m"),
    ("river", "rivière", "f"),
    ("garden", "jardin", "m"),
    ("city", "ville", "f"),
    ("ball", "balle", "f"),
    ("letter", "lettre", "f"),
    ("hat", "chapeau", "m"),
    ("shirt", "chemise", "f"),
    ("bike", "vélo", "m"),
    ("bed", "lit", "m"),
    ("cup", "tasse", "f"),
    ("key", "clé", "f"),
    ("box", "boîte", "f"),
    ("star", "étoile", "f"),
    ("moon", "lune", "f"),
    ("road", "route", "f"),
    ("school", "école", "f"),
    ("train", "train", "m"),
    ("phone", "téléphone", "m"),
    ("computer", "ordinateur", "m"),
    ("lamp", "lampe", "f"),
    ("bag", "sac", "m"),
    ("pen", "stylo", "m"),
    ("glass", "verre", "m"),
]

# english, french masculine, french feminine, position ("pre" before the noun, "post" after)
ADJECTIVES: list[tuple[str, str, str, str]] = [
    ("black", "noir", "noire", "post"),
    ("white", "blanc", "blanche", "post"),
    ("red", "rouge", "rouge", "post"),
    ("green", "vert", "verte", "post"),
    ("blue", "bleu", "bleue", "post"),
    ("yellow", "jaune", "jaune", "post"),
    ("grey", "gris", "grise", "post"),
    ("happy", "heureux", "heureuse", "post"),
    ("tired", "fatigué", "fatiguée", "post"),
    ("small", "petit", "petite", "pre"),
    ("big", "grand", "grande", "pre"),
    ("pretty", "joli", "jolie", "pre"),
    ("good", "bon", "bonne", "pre"),
    ("bad", "mauvais", "mauvaise", "pre"),
    ("young", "jeune", "jeune", "pre"),
]

# intransitive verbs: english 3rd person singular, french 3rd person singular
VERBS_INTRANSITIVE: list[tuple[str, str]] = [
    ("sleeps", "dort"),
    ("runs", "court"),
    ("sings", "chante"),
    ("dances", "danse"),
    ("waits", "attend"),
    ("falls", "tombe"),
    ("swims", "nage"),
    ("works", "travaille"),
    ("plays", "joue"),
    ("eats", "mange"),
]

VERBS_TRANSITIVE: list[tuple[str, str]] = [
    ("sees", "voit"),
    ("likes", "aime"),
    ("has", "a"),
    ("wants", "veut"),
    ("takes", "prend"),
    ("finds", "trouve"),
    ("watches", "regarde"),
    ("opens", "ouvre"),
    ("carries", "porte"),
    ("eats", "mange"),
]

PREPOSITIONS: list[tuple[str, str]] = [
    ("in", "dans"),
    ("on", "sur"),
    ("under", "sous"),
    ("behind", "derrière"),
    ("with", "avec"),
]

_VOWELS = "aeiouéèêâîôûh"


def _elides(word: str) -> bool:
    return word[0] in _VOWELS


# --------------------------------------------------------------------------------------
# Phrase generation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    en: str
    fr: str


def noun_phrase(noun: tuple[str, str, str], adj: tuple[str, str, str, str] | None, definite: bool) -> Pair:
    """Translate a determiner + (adjective) + noun phrase, with agreement and elision."""
    en_noun, fr_noun, gender = noun
    fem = gender == "f"
    if adj is None:
        en_words = [en_noun]
        fr_words = [fr_noun]
    else:
        en_adj, fr_m, fr_f, pos = adj
        fr_adj = fr_f if fem else fr_m
        en_words = [en_adj, en_noun]
        fr_words = [fr_adj, fr_noun] if pos == "pre" else [fr_noun, fr_adj]
    if definite:
        en_det = "the"
        if _elides(fr_words[0]):
            fr = "l'" + " ".join(fr_words)
        else:
            fr = ("la " if fem else "le ") + " ".join(fr_words)
    else:
        en_det = "an" if en_words[0][0] in "aeiou" else "a"
        fr = ("une " if fem else "un ") + " ".join(fr_words)
    return Pair(en_det + " " + " ".join(en_words), fr)


def random_noun_phrase(rng: random.Random, p_adj: float = 0.6) -> Pair:
    noun = rng.choice(NOUNS)
    adj = rng.choice(ADJECTIVES) if rng.random() < p_adj else None
    return noun_phrase(noun, adj, definite=rng.random() < 0.6)


def random_pair(rng: random.Random) -> Pair:
    """One random English phrase/sentence with its French translation."""
    kind = rng.random()
    subj = random_noun_phrase(rng)
    if kind < 0.15:
        return subj
    if kind < 0.45:
        en_v, fr_v = rng.choice(VERBS_INTRANSITIVE)
        return Pair(f"{subj.en} {en_v}", f"{subj.fr} {fr_v}")
    if kind < 0.80:
        en_v, fr_v = rng.choice(VERBS_TRANSITIVE)
        obj = random_noun_phrase(rng)
        return Pair(f"{subj.en} {en_v} {obj.en}", f"{subj.fr} {fr_v} {obj.fr}")
    en_v, fr_v = rng.choice(VERBS_INTRANSITIVE)
    en_p, fr_p = rng.choice(PREPOSITIONS)
    obj = random_noun_phrase(rng)
    return Pair(f"{subj.en} {en_v} {en_p} {obj.en}", f"{subj.fr} {fr_v} {fr_p} {obj.fr}")


def unique_pairs(rng: random.Random, n: int, exclude: set[str] | None = None) -> list[Pair]:
    """``n`` distinct random pairs (by English text), skipping any English text in ``exclude``."""
    exclude = exclude or set()
    seen: set[str] = set()
    out: list[Pair] = []
    while len(out) < n:
        p = random_pair(rng)
        if p.en in seen or p.en in exclude:
            continue
        seen.add(p.en)
        out.append(p)
    return out


def vocabulary_pairs() -> list[Pair]:
    """Every word of the vocabulary in at least one tiny phrase (coverage for pre-training)."""
    out: list[Pair] = []
    for noun in NOUNS:
        out.append(noun_phrase(noun, None, True))
        out.append(noun_phrase(noun, None, False))
        for adj in ADJECTIVES:
            out.append(noun_phrase(noun, adj, True))
    for en_v, fr_v in VERBS_INTRANSITIVE:
        for noun in NOUNS[:14]:
            s = noun_phrase(noun, None, True)
            out.append(Pair(f"{s.en} {en_v}", f"{s.fr} {fr_v}"))
    return out


# --------------------------------------------------------------------------------------
# Other simple chat tasks (taught in pre-training so the model knows the chat format)
# --------------------------------------------------------------------------------------

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]


def other_task(rng: random.Random, text: str) -> tuple[str, str]:
    """A (user, assistant) exchange of a simple non-translation task about ``text``."""
    words = text.split()
    k = rng.randrange(6)
    if k == 0:
        return f"Repeat: {text}", text
    if k == 1:
        return f"Reverse the words: {text}", " ".join(reversed(words))
    if k == 2:
        return f"How many words: {text}", str(len(words))
    if k == 3:
        return f"First word: {text}", words[0]
    if k == 4:
        return f"Last word: {text}", words[-1]
    return f"Count the words in words: {text}", NUMBER_WORDS[min(len(words), 12)]


SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a tiny demo model.",
    "Answer briefly.",
]

TRANSLATE_PREFIX = "Translate to French: "
