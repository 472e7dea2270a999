"""Student log-probs, the discriminator's init and where it reads its score, tiny model."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from trainer.discriminator import build_discriminator
from trainer.models import load_student, response_logprobs
from trainer.sequences import pack, trim_at_eos

CPU = torch.device("cpu")


def test_tiny_model_loads_with_auto_classes_and_ends_turns_with_eos(tiny_model, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.model_type == "qwen2"
    assert (
        tokenizer.eos_token == "<|im_end|>" and model.config.eos_token_id == tokenizer.eos_token_id
    )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.eos_token_id in ids  # special tokens are single ids, not split bytes
    assert tokenizer.decode(tokenizer("any ünïcode ✓")["input_ids"]) == "any ünïcode ✓"


def test_response_logprobs_match_full_softmax(tiny_model):
    model = load_student(str(tiny_model), CPU)
    batch = pack([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0)
    logp, entropy = response_logprobs(model, batch, want_entropy=True)
    for row, (prompt, resp) in enumerate([([5, 6, 7], [9, 10]), ([8], [11, 12, 13])]):
        ids = torch.tensor([prompt + resp])
        full = torch.log_softmax(model(ids).logits[0].float(), -1)
        for j, tok in enumerate(resp):
            pos = len(prompt) + j - 1
            torch.testing.assert_close(logp[row, j], full[pos, tok], atol=1e-5, rtol=1e-5)
            ent = -(full[pos].exp() * full[pos]).sum()
            torch.testing.assert_close(entropy[row, j], ent, atol=1e-4, rtol=1e-4)
    assert logp[0, 2] == 0 and batch.response_mask[0].tolist() == [1, 1, 0]


def test_discriminator_starts_from_the_students_weights(tiny_model):
    student = AutoModelForCausalLM.from_pretrained(tiny_model)
    disc = build_discriminator(str(tiny_model), CPU, seed=0)
    for name, param in disc.backbone.state_dict().items():
        torch.testing.assert_close(param, student.state_dict()[f"model.{name}"])
    assert disc.head.out_features == 1 and disc.head.in_features == student.config.hidden_size


def test_teacher_and_student_are_scored_at_their_last_real_token(tiny_model, tokenizer):
    disc = build_discriminator(str(tiny_model), CPU).eval()
    eos = tokenizer.eos_token_id
    prompt = [1, 40, 41, 2, 201, 1, 42]
    teacher = [50, 51, 52, 53, eos]  # terminated: scored at its EOS
    student = [60, eos]  # shorter, terminated
    cut, done = trim_at_eos([70, 71, 72, 73, 74, 75, 76], eos, 4)  # cut: last kept token
    assert cut == [70, 71, 72, 73] and not done
    batch = pack([prompt] * 3, [teacher, student, cut], pad_id=0)
    assert batch.last_index.tolist() == [len(prompt) + 4, len(prompt) + 1, len(prompt) + 3]
    with torch.no_grad():
        scores = disc(batch)
        for row, resp in enumerate([teacher, student, cut]):
            ids = torch.tensor([prompt + resp])
            hidden = disc.backbone(input_ids=ids).last_hidden_state[0, -1]
            torch.testing.assert_close(scores[row], disc.head(hidden).squeeze(-1))
    assert torch.isclose(scores[0], scores[1]).item() is False  # different answers differ


def test_trim_at_eos_keeps_the_eos_and_drops_what_follows():
    assert trim_at_eos([3, 4, 2, 9, 9], 2, 10) == ([3, 4, 2], True)
    assert trim_at_eos([3, 4, 5], 2, 2) == ([3, 4], False)


@pytest.mark.parametrize("temperature", [0.5, 0.8, 1.0])
def test_response_logprobs_at_a_temperature_are_the_scaled_softmax(tiny_model, temperature):
    """GAD.md "Temperature": log_softmax(logits / T) at the response tokens."""
    model = load_student(str(tiny_model), CPU)
    prompt, resp = [5, 6, 7], [9, 10, 11]
    logp, entropy = response_logprobs(
        model, pack([prompt], [resp], pad_id=0), want_entropy=True, temperature=temperature
    )
    with torch.no_grad():
        logits = model(torch.tensor([prompt + resp])).logits[0].float() / temperature
    full = torch.log_softmax(logits, -1)
    for j, tok in enumerate(resp):
        pos = len(prompt) + j - 1
        torch.testing.assert_close(logp[0, j], full[pos, tok], atol=1e-5, rtol=1e-5)
        ent = -(full[pos].exp() * full[pos]).sum()
        torch.testing.assert_close(entropy[0, j], ent, atol=1e-4, rtol=1e-4)
