"""Generate the demo prompt set: a few thousand short instructions with exact answers.

The answers let `make demo` train a tiny "teacher" for a minute, so that the teacher it
serves answers coherently; the prompts (without answers) are what the demo distils.
No prompt occurs twice, case, spacing and punctuation aside (``trainer.dedup``): the
demo distils and evaluates on the first 240 and pretrains its student on the last 1280,
so a held-out prompt is never one the student saw.

    python demo/make_prompts.py --out demo/prompts.jsonl --n 3000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random

from trainer.dedup import normalise

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Cuba": "Havana",
    "India": "New Delhi",
    "China": "Beijing",
    "Russia": "Moscow",
    "Turkey": "Ankara",
    "Mexico": "Mexico City",
    "Brazil": "Brasilia",
    "Argentina": "Buenos Aires",
    "Australia": "Canberra",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Hungary": "Budapest",
    "Belgium": "Brussels",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Morocco": "Rabat",
}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "happy": "sad",
    "light": "dark",
    "up": "down",
    "open": "closed",
    "early": "late",
    "full": "empty",
    "strong": "weak",
    "old": "new",
    "hard": "soft",
    "high": "low",
    "wet": "dry",
    "near": "far",
    "rich": "poor",
    "loud": "quiet",
}
WORDS = [
    "apple",
    "river",
    "garden",
    "window",
    "planet",
    "silver",
    "rocket",
    "pencil",
    "forest",
    "candle",
    "bridge",
    "dragon",
    "castle",
    "market",
    "winter",
    "summer",
    "orange",
    "button",
    "guitar",
    "island",
    "jacket",
    "kitten",
    "ladder",
    "mirror",
    "needle",
    "pillow",
    "rabbit",
]


def arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    if rng.random() < 0.5:
        return f"What is {a} + {b}?", f"{a} + {b} = {a + b}."
    a, b = max(a, b), min(a, b)
    return f"What is {a} minus {b}?", f"{a} - {b} = {a - b}."


def capital(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."


def opposite(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(sorted(OPPOSITES))
    return f"What is the opposite of {word}?", f"The opposite of {word} is {OPPOSITES[word]}."


def reverse(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return f"Reverse the word '{word}'.", f"The word '{word}' reversed is '{word[::-1]}'."


def count_letters(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return f"How many letters are in '{word}'?", f"'{word}' has {len(word)} letters."


def minutes(rng: random.Random) -> tuple[str, str]:
    hours = rng.randint(1, 12)
    return f"How many minutes are in {hours} hours?", f"{hours} hours is {hours * 60} minutes."


def sort_numbers(rng: random.Random) -> tuple[str, str]:
    numbers = rng.sample(range(1, 50), 4)
    shown = ", ".join(map(str, numbers))
    return f"Sort these numbers: {shown}.", "Sorted: " + ", ".join(map(str, sorted(numbers))) + "."


def shout(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(WORDS, 2)
    return f"Write '{a} {b}' in capital letters.", f"{a.upper()} {b.upper()}"


KINDS = [arithmetic, capital, opposite, reverse, count_letters, minutes, sort_numbers, shout]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo/prompts.jsonl")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seen: set[str] = set()
    with open(args.out, "w", encoding="utf-8") as out:
        while len(seen) < args.n:
            prompt, answer = rng.choice(KINDS)(rng)
            key = normalise(prompt)
            if key in seen:  # drawn before: the kinds with few prompts run out first
                continue
            seen.add(key)
            record = {"id": f"demo-{len(seen) - 1}", "prompt": prompt, "teacher_response": answer}
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
