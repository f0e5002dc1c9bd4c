"""KL drift: how far a candidate policy has moved from the policy it would replace.

The gate reports KL(candidate ‖ baseline) over whole answers, in nats per answer, a Monte Carlo
estimate on the candidate's own sampled answers. The textbook estimate is the mean over answers y
of log p_candidate(y|x) - log p_baseline(y|x), the sum over y's tokens of the log-ratio of the
sampled token. For two close policies that sum is noise around a tiny mean (a lightly trained
candidate measured -0.005 nats that way), so each token's log-ratio is replaced by its expectation
under the candidate, the full next-token KL at that position:

    KL(candidate ‖ baseline) = E_{y ~ candidate} sum_t KL(p_c(· | x, y<t) ‖ p_b(· | x, y<t))

(the chain rule of KL). Same mean, never negative, much less variance, and exactly zero for an
unchanged candidate. Divided by the answer tokens instead, it is nats per token.

It is unbiased when the answers are plain samples of the candidate (temperature 1, no top-p), as
the gate's are; answers cut at ``max_new_tokens`` make it the KL of that truncated distribution.
The prompt is rendered with the chat template as the generation backend renders it
(``add_generation_prompt``), so the scored positions are exactly the assistant turn the policy
sampled: the answer's tokens and, when it stopped by itself, the end-of-sequence token. Template
text after that (a newline after the end marker) is never sampled, so it is not scored. Both
policies must share a tokenizer (a candidate trained from the baseline's lineage does).
"""

from __future__ import annotations

from typing import Any

from feedback.serving.backends import Generated, Messages, Target, require_safetensors
from feedback.serving.devices import inference_load_kwargs

Sample = tuple[Messages, Generated]


class DriftUnavailable(Exception):
    """The drift cannot be measured here: weights not local (say, a hub id that is not
    downloaded), or two policies whose tokenizers differ."""


def kl_drift(*, candidate: Target, baseline: Target, samples: list[Sample]) -> dict[str, float]:
    """KL(candidate ‖ baseline) on ``samples``, the candidate's own answers (see the module)."""
    import torch

    tokenizer, candidate_model = _load(candidate)
    baseline_tokenizer, baseline_model = _load(baseline)
    if baseline_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise DriftUnavailable("the two policies' tokenizers differ")
    per_answer: list[float] = []
    tokens = 0
    for prompt, answer in samples:
        prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer.text, add_special_tokens=False)["input_ids"]
        if answer.finish_reason == "stop":
            answer_ids = [*answer_ids, tokenizer.eos_token_id]
        if not answer_ids:
            per_answer.append(0.0)
            continue
        ids = torch.tensor([prefix_ids + answer_ids])
        predicting = slice(len(prefix_ids) - 1, -1)  # the logits that predict each answer token
        with torch.inference_mode():
            log_c = _log_probs(candidate_model, ids)[predicting]
            log_b = _log_probs(baseline_model, ids)[predicting].to(log_c.device)
        per_answer.append(float((log_c.exp() * (log_c - log_b)).sum()))
        tokens += len(answer_ids)
    return {
        "kl_drift": sum(per_answer) / max(1, len(per_answer)),
        "kl_drift_per_token": sum(per_answer) / max(1, tokens),
    }


def _log_probs(model: Any, ids: Any) -> Any:
    """Next-token log-probabilities at every position of one sequence, in float32 (the ids go
    where the model's first layer is; a big model may be spread over several GPUs)."""
    import torch

    return torch.log_softmax(model(input_ids=ids.to(model.device)).logits[0].float(), dim=-1)


def _load(target: Target) -> tuple[Any, Any]:
    """The tokenizer and the model (with its LoRA adapter, if any), where and in the precision
    ``DEVICE`` picks: bf16 (else fp16) on a GPU, as the trainers use it (two policies at once
    must fit; the log-probabilities are taken in fp32), fp32 on a CPU. Only local files: a gate
    should not start a download of a model it cannot find."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(target.model, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            target.model, local_files_only=True, use_safetensors=True, **inference_load_kwargs()
        )
        if target.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, require_safetensors(target.adapter))
    except (OSError, ValueError) as exc:
        raise DriftUnavailable(f"cannot load {target.model} here: {exc}"[:1000]) from exc
    model.eval()
    return tokenizer, model
