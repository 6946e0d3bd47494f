"""CRUXEval answer extraction and chat request, at facebookresearch/cruxeval @ 190faf16.

Two official harnesses, two protocols:

- base models (``model.mode=completion``): ``inference/tasks/input_prediction.py`` and
  ``output_prediction.py`` ``postprocess_generation`` on the text after the prompt (vLLM cut it
  at the stop word ``[/ANSWER]``);
- chat models: ``openai/openai_prompt.py`` ``extract_answer_{direct,cot}_{input,output}``, on
  the ``content`` of a request made as ``call_openai_api`` makes it (system message, stop
  ``[/ANSWER]``, ``max_tokens`` 100 direct / 1000 CoT from ``openai/openai_run.py``).

The two differ only for CoT answers without ``[ANSWER]``: the chat harness keeps the last line,
the inference harness the whole text. Input prediction splits on ``"assert f"`` (the
pre-``#2`` code split on ``"assert"``, which matched inside words such as "assertion").
"""

from __future__ import annotations

from benchforge.answers.stops import stop_at_stop_token
from benchforge.answers.thinking import split_thinking

STOP = "[/ANSWER]"
# openai/openai_prompt.py prompt_openai_general, verbatim
SYSTEM_PROMPT = ("You are an expert at Python programming, code execution, test case "
                 "generation, and fuzzing.")
# openai/openai_run.py run_openai: max_tokens = 1000 if cot else 100
CHAT_MAX_TOKENS = {False: 100, True: 1000}
# inference/scripts/run_{input,output}_prediction[_cot].sh: --max_length_generation
COMPLETION_MAX_TOKENS = {False: 1024, True: 2048}


def _input_call(generation: str) -> str:
    if "==" in generation:
        generation = generation.split("==")[0].strip()
    if "assert f" in generation:
        generation = "f" + generation.split("assert f")[1].strip()
    return generation.strip()


def harness_answer(generation: str, predict: str, cot: bool) -> str:
    """``postprocess_generation`` of CRUXEval's inference harness (base models).

    Args:
        generation: the text generated after the prompt.
        predict: what the model predicts: ``"input"`` (CRUXEval-I) or ``"output"``
            (CRUXEval-O).
        cot: the chain-of-thought prompt was used.

    Returns:
        The predicted call ``f(...)`` (input) or value (output), as a Python expression.
    """
    generation = stop_at_stop_token(generation, [STOP])
    if cot and "[ANSWER]" in generation:
        generation = generation.split("[ANSWER]")[1].strip()
    if predict == "input":
        return _input_call(generation)
    if "==" in generation:
        generation = generation.split("==")[1].strip()
    return generation.strip()


def chat_answer(content: str, predict: str, cot: bool) -> str:
    """``extract_answer_*`` of CRUXEval's OpenAI chat harness, on a chat reply's content
    (reasoning split off first, and the text cut at ``[/ANSWER]`` as the API's ``stop`` does).

    Args and return as :func:`harness_answer`.
    """
    gen = stop_at_stop_token(split_thinking(content)[0], [STOP])
    if cot:
        if "[ANSWER]" not in gen:
            return gen.split("\n")[-1].strip()
        gen = gen.split("[ANSWER]")[1].strip()
        if predict == "input":
            if "==" in gen:
                gen = gen.split("==")[0]
            if "assert f" in gen:
                gen = "f" + gen.split("assert f")[1].strip()
            return gen.strip()
        if "==" in gen:
            gen = gen.split("==")[1]
        return gen.strip()
    if predict == "input":
        return _input_call(gen)
    if "==" in gen:
        gen = gen.split("==")[1]
    return gen.strip()
