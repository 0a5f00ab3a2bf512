"""A deterministic demo set of short two-person dialogues with summaries (DialogSum-style JSONL).

Each dialogue comes from one of a few scenarios (booking, meeting, shopping, directions, health,
travel) with random slot values and optional small talk; its summary restates the slots, so a
small model must learn to find and copy them. Train and validation rows have `summary`; test
rows have `summary1` and `summary2` (two phrasings), like DialogSum's multi-reference test split.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from .store import write_jsonl_splits

P1, P2 = "#Person1#", "#Person2#"
NUMBERS = ["two", "three", "four", "five", "six"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["9 am", "10 am", "noon", "2 pm", "4 pm", "6 pm", "7 pm", "8 pm"]
RESTAURANTS = ["Luigi's", "the Golden Dragon", "Blue Harbor", "Café Rosa", "the Green Table"]
PLACES = ["the library", "the station", "the museum", "the bank", "the post office", "the park"]
TOPICS = ["the budget", "the new project", "the sales report", "the holiday plan", "the contract"]
ITEMS = ["shirt", "lamp", "notebook", "umbrella", "backpack", "mug"]
PRICES = ["ten", "fifteen", "twenty", "thirty", "fifty"]
DIRECTIONS = ["turn left at the corner", "go straight for two blocks", "take the first right",
              "cross the bridge", "follow the main road"]
SYMPTOMS = ["a headache", "a sore throat", "a fever", "a bad cough", "a stomach ache"]
ADVICE = ["resting at home", "drinking more water", "seeing a doctor", "taking some medicine"]
CITIES = ["Boston", "Chicago", "Denver", "Seattle", "Miami", "Dallas"]
SMALL_TALK = [(f"{P1}: Nice weather today, isn't it?", f"{P2}: Yes, it is lovely."),
              (f"{P2}: How are you doing?", f"{P1}: Fine, thanks. A bit busy."),
              (f"{P1}: Sorry, I am a little late.", f"{P2}: No problem at all.")]

Scenario = Callable[[random.Random], tuple[list[str], str, str]]


def _booking(rng: random.Random) -> tuple[list[str], str, str]:
    n, where, time, day = rng.choice(NUMBERS), rng.choice(RESTAURANTS), rng.choice(TIMES), rng.choice(DAYS)
    turns = [f"{P2}: Good evening, {where}. How can I help you?",
             f"{P1}: I would like to book a table for {n} people.", f"{P2}: For which day and time?",
             f"{P1}: {day} at {time}, please.", f"{P2}: That is fine. See you on {day}."]
    return (turns, f"{P1} books a table for {n} at {where} on {day} at {time}.",
            f"{P1} reserves a table at {where} for {n} people at {time} on {day}.")


def _meeting(rng: random.Random) -> tuple[list[str], str, str]:
    place, day, time, topic = rng.choice(PLACES), rng.choice(DAYS), rng.choice(TIMES), rng.choice(TOPICS)
    turns = [f"{P1}: We need to talk about {topic}.", f"{P2}: Sure. When are you free?",
             f"{P1}: How about {day} at {time}?", f"{P2}: Good. Let's meet at {place}.", f"{P1}: Great, see you then."]
    return (turns, f"{P1} and {P2} will meet at {place} on {day} at {time} to discuss {topic}.",
            f"{P1} and {P2} agree to discuss {topic} at {place} at {time} on {day}.")


def _shopping(rng: random.Random) -> tuple[list[str], str, str]:
    n, item, price = rng.choice(NUMBERS), rng.choice(ITEMS), rng.choice(PRICES)
    turns = [f"{P2}: Can I help you find anything?", f"{P1}: Yes, how much is this {item}?",
             f"{P2}: It is {price} dollars.", f"{P1}: Then I will take {n} of them.",
             f"{P2}: Here you are. Thank you."]
    return (turns, f"{P1} buys {n} {item}s for {price} dollars each.",
            f"{P1} pays {price} dollars each for {n} {item}s.")


def _directions(rng: random.Random) -> tuple[list[str], str, str]:
    place, how = rng.choice(PLACES), rng.choice(DIRECTIONS)
    turns = [f"{P1}: Excuse me, how do I get to {place}?", f"{P2}: It is not far. You {how}.",
             f"{P1}: Thank you very much.", f"{P2}: You are welcome."]
    return (turns, f"{P2} tells {P1} the way to {place}: {how}.",
            f"{P1} asks for {place} and {P2} says to {how}.")


def _health(rng: random.Random) -> tuple[list[str], str, str]:
    symptom, advice = rng.choice(SYMPTOMS), rng.choice(ADVICE)
    turns = [f"{P2}: You look tired. What's wrong?", f"{P1}: I have {symptom} since yesterday.",
             f"{P2}: I think you should try {advice}.", f"{P1}: Good idea, I will do that."]
    return (turns, f"{P1} has {symptom} and {P2} suggests {advice}.",
            f"{P2} recommends {advice} because {P1} has {symptom}.")


def _travel(rng: random.Random) -> tuple[list[str], str, str]:
    city, day, time = rng.choice(CITIES), rng.choice(DAYS), rng.choice(TIMES)
    turns = [f"{P1}: I need a train ticket to {city}.", f"{P2}: When do you want to leave?",
             f"{P1}: On {day}.", f"{P2}: The train leaves at {time} on {day}.", f"{P1}: Perfect, one ticket please."]
    return (turns, f"{P1} buys a train ticket to {city} for {day} at {time}.",
            f"{P1} will take the {time} train to {city} on {day}.")


SCENARIOS: dict[str, Scenario] = {"booking": _booking, "meeting": _meeting, "shopping": _shopping,
                                  "directions": _directions, "health": _health, "travel": _travel}


def make_dialogues(directory: str | Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write `train/validation/test.jsonl` unless they exist; return the dir."""
    names = list(SCENARIOS)

    def row(rng: random.Random, split: str, i: int) -> dict:
        topic = names[i % len(names)]
        turns, summary, paraphrase = SCENARIOS[topic](rng)
        if rng.random() < 0.5:
            turns = [*rng.choice(SMALL_TALK), *turns]
        row = {"fname": f"{split}_{i}", "dialogue": "\n".join(turns), "topic": topic}
        row.update({"summary1": summary, "summary2": paraphrase} if split == "test" else {"summary": summary})
        return row

    return write_jsonl_splits(directory, sizes or {"train": 2000, "validation": 200, "test": 200}, seed, row)
