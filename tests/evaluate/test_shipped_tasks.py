"""The shipped lm-eval task files read the shared data as lm-eval would (sizes, prompts, gold answers)."""

import pytest

from lmforge.evaluate.tasks import Task, expand, resolve, task_index

SIZES = {"arc_easy": 2376, "piqa": 1838, "hellaswag": 10042, "winogrande": 1267, "lambada_openai": 5153, "gsm8k": 1319,
         "mmlu_anatomy": 135}


@pytest.fixture(scope="module")
def shipped(data_root):
    return {name: Task(resolve(name), data=data_root) for name in SIZES}


def test_every_shipped_task_reads_its_split(shipped):
    assert {name: len(task.docs) for name, task in shipped.items()} == SIZES
    assert len(expand(resolve("mmlu"))) == 57 and "mmlu" in task_index()


def test_prompts_and_answers(shipped):
    arc = shipped["arc_easy"]
    doc = arc.docs[0]
    assert arc.contexts(doc) == ["Question: Which statement best explains why photosynthesis is the foundation of most "
                                 "food webs?\nAnswer:"]
    assert arc.doc_to_choice(doc)[arc.gold(doc)] == "Sunlight is the source of energy for nearly all ecosystems."
    wino = shipped["winogrande"]
    assert wino.multiple_input and wino.contexts(wino.docs[0])[1].endswith("so Maria") and wino.gold(wino.docs[0]) == 1
    piqa = shipped["piqa"]
    assert [piqa.gold(d) for d in piqa.docs[:3]] == [0, 1, 1]  # piqa/valid-labels.lst
    lambada = shipped["lambada_openai"]
    assert lambada.doc_to_target(lambada.docs[0]) == " signs"
    gsm8k = shipped["gsm8k"]
    prompt = gsm8k.contexts(gsm8k.docs[0])[0]
    assert prompt.count("Question:") == 6 and prompt.endswith("farmers' market?\nAnswer:")
    assert gsm8k.docs[0]["question"] not in prompt.split("\n\n", 5)[-2]  # the asked question is never a shot
    mmlu = shipped["mmlu_anatomy"]
    prompt = mmlu.contexts(mmlu.docs[0])[0]
    assert prompt.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert prompt.count("\nAnswer:") == 6 and mmlu.doc_to_choice(mmlu.docs[0]) == ["A", "B", "C", "D"]
