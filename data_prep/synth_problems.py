"""Arithmetic word problems with verifiable integer answers, and the texts built from them (docs/tiny_science.md).

Levels: L1 = one add/subtract step, L2 = two, L3 = three steps of which one is "buys k bags with m in each"
(two equations: k * m, then the add), so four equations. Every intermediate count stays >= 0.
One `Problem` renders as a question, a short chain of thought (the equations), a long chain of thought (each
clause restated and each step checked by the inverse operation) and a "math web" worked example.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = [("Mia", "she"), ("Tom", "he"), ("Ava", "she"), ("Leo", "he"), ("Zoe", "she"), ("Sam", "he"),
         ("Emma", "she"), ("Noah", "he"), ("Lily", "she"), ("Jack", "he"), ("Nora", "she"), ("Ben", "he"),
         ("Ella", "she"), ("Max", "he"), ("Ruby", "she"), ("Owen", "he"), ("Ivy", "she"), ("Eli", "he"),
         ("Rosa", "she"), ("Omar", "he"), ("Lucy", "she"), ("Adam", "he"), ("Maya", "she"), ("Ryan", "he"),
         ("Anna", "she"), ("Luke", "he"), ("Sara", "she"), ("Finn", "he"), ("Kate", "she"), ("Hugo", "he")]
FRIENDS = ["their brother", "their sister", "a friend", "a neighbor", "the teacher", "a classmate", "the coach"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "coins", "cards", "shells", "stamps",
         "balloons", "crayons", "buttons", "candies", "beads", "flowers", "toy cars", "eggs", "oranges", "blocks"]
CONTAINERS = ["bags", "boxes", "packs", "jars", "baskets"]
ADD_VERBS = ["buys {a} more {item}", "finds {a} more {item}", "gets {a} more {item} from {friend}",
             "picks up {a} more {item}", "wins {a} more {item}"]
SUB_VERBS = ["gives {a} {item} to {friend}", "loses {a} {item}", "sells {a} {item}", "uses {a} {item}",
             "gives away {a} {item}"]
BAG_VERBS = ["buys {k} {box} with {m} {item} in each", "gets {k} {box} with {m} {item} in each"]
ORDINALS = ["First", "Next", "Then", "After that"]
QUESTION_ENDS = ["How many {item} does {name} have now?", "How many {item} does {name} have in the end?"]


@dataclass(frozen=True)
class Step:
    kind: str  # "add" | "sub" | "bags"
    a: int  # amount added/removed; for bags: number of bags
    m: int = 0  # bags only: items in each bag
    verb: str = ""  # the clause, filled in ("buys 7 more apples")


@dataclass(frozen=True)
class Problem:
    name: str
    pronoun: str
    item: str
    start: int
    steps: tuple[Step, ...]
    level: str  # "L1" | "L2" | "L3"
    ending: str  # the question sentence

    def counts(self) -> list[int]:
        """The count after each step (the first entry is the start)."""
        out = [self.start]
        for s in self.steps:
            delta = s.a * s.m if s.kind == "bags" else (s.a if s.kind == "add" else -s.a)
            out.append(out[-1] + delta)
        return out

    @property
    def answer(self) -> int:
        return self.counts()[-1]


def make_problem(rng: random.Random, level: str) -> Problem:
    """One random problem of the given level; all counts stay non-negative."""
    name, pronoun = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    n_steps = {"L1": 1, "L2": 2, "L3": 3}[level]
    kinds = [rng.choice(("add", "sub")) for _ in range(n_steps)]
    if level == "L3":
        kinds[rng.randrange(3)] = "bags"
    cur = start = rng.randint(5, 40) if level != "L1" else rng.randint(3, 30)
    friend = rng.choice(FRIENDS)
    if friend.startswith("their"):
        friend = friend.replace("their", "her" if pronoun == "she" else "his")
    steps = []
    for kind in kinds:
        if kind == "bags":
            k, m = rng.randint(2, 6), rng.randint(2, 9)
            verb = rng.choice(BAG_VERBS).format(k=k, m=m, box=rng.choice(CONTAINERS), item=item)
            steps.append(Step("bags", k, m, verb))
            cur += k * m
        elif kind == "sub" and cur >= 3:
            a = rng.randint(2, min(cur - 1, 25))
            steps.append(Step("sub", a, 0, rng.choice(SUB_VERBS).format(a=a, item=item, friend=friend)))
            cur -= a
        else:
            a = rng.randint(2, 25)
            steps.append(Step("add", a, 0, rng.choice(ADD_VERBS).format(a=a, item=item, friend=friend)))
            cur += a
    ending = rng.choice(QUESTION_ENDS).format(item=item, name=name)
    return Problem(name, pronoun, item, start, tuple(steps), level, ending)


def story(p: Problem) -> str:
    """The statements of the problem, without the question sentence."""
    parts = [f"{p.name} has {p.start} {p.item}."]
    for i, s in enumerate(p.steps):
        parts.append(f"{p.pronoun.capitalize()} {s.verb}." if i == 0 else f"Then {p.pronoun} {s.verb}.")
    return " ".join(parts)


def question(p: Problem) -> str:
    return f"{story(p)} {p.ending}"


def equations(p: Problem) -> list[str]:
    eqs, counts = [], p.counts()
    for s, before, after in zip(p.steps, counts, counts[1:]):
        if s.kind == "bags":
            eqs.append(f"{s.a} * {s.m} = {s.a * s.m}")
            eqs.append(f"{before} + {s.a * s.m} = {after}")
        else:
            eqs.append(f"{before} {'+' if s.kind == 'add' else '-'} {s.a} = {after}")
    return eqs


def boxed(n: int) -> str:
    return "\\boxed{" + str(n) + "}"


def short_cot(p: Problem) -> str:
    """'12 + 7 = 19. 19 - 5 = 14. The answer is \\boxed{14}.'"""
    return ". ".join(equations(p)) + f". The answer is {boxed(p.answer)}."


def long_cot(p: Problem) -> str:
    """Restates every clause, does its equation and checks it with the inverse operation."""
    counts = p.counts()
    lines = ["Let's go through the story one step at a time.", f"{p.name} starts with {p.start} {p.item}."]
    for i, (s, before, after) in enumerate(zip(p.steps, counts, counts[1:])):
        head = f"{ORDINALS[min(i, 3)]}, {p.pronoun} {s.verb}."
        if s.kind == "bags":
            km = s.a * s.m
            body = (f" That is {s.a} * {s.m} = {km} {p.item}. Check: {km} / {s.a} = {s.m}, which is right."
                    f" Adding them gives {before} + {km} = {after}. Check: {after} - {km} = {before}, which is right.")
        elif s.kind == "add":
            body = (f" That adds {s.a} {p.item}: {before} + {s.a} = {after}."
                    f" Check: {after} - {s.a} = {before}, which is right.")
        else:
            body = (f" That takes away {s.a} {p.item}: {before} - {s.a} = {after}."
                    f" Check: {after} + {s.a} = {before}, which is right.")
        lines.append(head + body + f" Now {p.name} has {after} {p.item}.")
    lines.append(f"So {p.name} has {p.answer} {p.item} in the end. The answer is {boxed(p.answer)}.")
    return "\n".join(lines)


def worked_example(rng: random.Random, p: Problem) -> str:
    """A web-style worked example (never a Question/Answer label); sometimes ends with a boxed result."""
    eqs = equations(p)
    if len(p.steps) == 1 and rng.random() < 0.5:
        s = p.steps[0]
        text = (f"Suppose {p.name} has {p.start} {p.item} and {s.verb}. "
                f"Then {p.pronoun} has {eqs[-1]} {p.item}.")
    else:
        firsts = ["First", "Then", "Next", "After that", "Finally"]
        work = " ".join(f"{firsts[min(i, 4)]}, {e}." for i, e in enumerate(eqs))
        text = f"Example. {story(p)} {work} So {p.name} ends up with {p.answer} {p.item}."
    if rng.random() < 0.3:
        text += f" The result is {boxed(p.answer)}."
    return text


def fact_sentence(rng: random.Random) -> str:
    """One arithmetic fact in words or symbols; includes inverse facts (they teach the long-CoT checks)."""
    a, b = rng.randint(0, 40), rng.randint(0, 40)
    k, m = rng.randint(2, 9), rng.randint(2, 9)
    c = a + b
    forms = [f"{a} plus {b} equals {c}.", f"The sum of {a} and {b} is {c}.", f"{c} minus {b} is {a}.",
             f"If you take {b} away from {c}, you get {a}.", f"{k} times {m} is {k * m}.",
             f"{k} groups of {m} make {k * m}.", f"{k * m} divided by {k} is {m}.",
             f"Adding {b} to {a} gives {c}, and taking {b} away again gives back {a}.",
             f"The difference between {c} and {a} is {b}.", f"{a} + {b} = {c}, so {c} - {a} = {b}."]
    return rng.choice(forms)


def equation_list(rng: random.Random) -> str:
    """A practice sheet: a heading and lines of equations of one kind."""
    kind = rng.choice(["addition", "subtraction", "multiplication", "mixed"])
    n = rng.randint(8, 16)
    lines = [rng.choice([f"Practice sheet: {kind}.", f"{kind.capitalize()} drill", f"More {kind} practice:"])]
    for _ in range(n):
        k = kind if kind != "mixed" else rng.choice(["addition", "subtraction", "multiplication"])
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        if k == "addition":
            lines.append(f"{a} + {b} = {a + b}")
        elif k == "subtraction":
            lines.append(f"{a + b} - {b} = {a}")
        else:
            x, y = rng.randint(2, 12), rng.randint(2, 12)
            lines.append(f"{x} * {y} = {x * y}")
    return "\n".join(lines)
