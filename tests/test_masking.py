"""Only assistant answers and their end token are learned, token by token, also through padding."""

import torch
import torch.nn.functional as F

from skyeye.model.inputs import IGNORE_INDEX, collate, encode
from skyeye.prompts import Conversation

TOKENS_PER_IMAGE = 4


def _conversation(*pairs):
    conv = Conversation()
    for question, answer in pairs:
        conv.ask(question, "vqa").answer(answer)
    return conv


def test_labels_are_exactly_the_answer_tokens_and_end_tokens(tokenizer):
    conv = _conversation(("how many planes?", "three"), ("is it urban?", "yes, a dense city"))
    encoded = encode(conv.segments("skyeye"), tokenizer, TOKENS_PER_IMAGE)
    ids, labels = encoded.input_ids, encoded.labels
    assert ids[0] == tokenizer.bos_token_id
    assert sum(encoded.image_mask) == TOKENS_PER_IMAGE

    expected = []
    for segment in conv.segments("skyeye"):
        if segment.kind == "image":
            n = TOKENS_PER_IMAGE
            piece = [tokenizer.pad_token_id] * n
        elif segment.kind in ("bos", "eos"):
            piece = [tokenizer.bos_token_id if segment.kind == "bos" else tokenizer.eos_token_id]
        else:
            piece = tokenizer(segment.text, add_special_tokens=False)["input_ids"]
        expected += [(tok, segment.learn) for tok in piece]
    assert len(ids) == len(expected)
    for position, (token, learned) in enumerate(expected):
        assert ids[position] == token
        assert labels[position] == (token if learned else IGNORE_INDEX), position
    learned = [t for t in labels if t != IGNORE_INDEX]
    assert learned.count(tokenizer.eos_token_id) == 2 and learned[-1] == tokenizer.eos_token_id
    cut = learned.index(tokenizer.eos_token_id)
    assert [tokenizer.decode(learned[:cut]), tokenizer.decode(learned[cut + 1 : -1])] == ["three", "yes, a dense city"]


def test_every_instruction_follows_a_bos_token_id_and_bos_is_never_learned(tokenizer):
    conv = _conversation(("how many planes?", "three"), ("is it urban?", "yes"))
    encoded = encode(conv.segments("skyeye"), tokenizer, TOKENS_PER_IMAGE)
    ids, labels = encoded.input_ids, encoded.labels
    inst = tokenizer("[INST]", add_special_tokens=False)["input_ids"]
    starts = [i for i in range(len(ids)) if ids[i : i + len(inst)] == inst]
    assert len(starts) == 2
    assert [ids[i - 1] for i in starts] == [tokenizer.bos_token_id] * 2
    assert ids.count(tokenizer.bos_token_id) == 2
    assert all(labels[i] == IGNORE_INDEX for i, t in enumerate(ids) if t == tokenizer.bos_token_id)
    learned = [t for t in labels if t != IGNORE_INDEX]
    assert tokenizer.decode(learned, skip_special_tokens=True).split() == ["three", "yes"]
    first_turn = encode(_conversation(("how many planes?", "three")).segments("skyeye"), tokenizer, TOKENS_PER_IMAGE)
    assert ids[: len(first_turn)] == first_turn.input_ids, "a follow-up turn only appends"


def test_the_minigptv2_style_starts_with_two_bos_ids(tokenizer):
    conv = _conversation(("q", "a"), ("q2", "a2"))
    ours = encode(conv.segments("skyeye"), tokenizer, TOKENS_PER_IMAGE)
    theirs = encode(conv.segments("minigptv2"), tokenizer, TOKENS_PER_IMAGE)
    assert theirs.input_ids[:2] == [tokenizer.bos_token_id] * 2
    assert theirs.input_ids[1:] == ours.input_ids and theirs.labels[1:] == ours.labels


def test_long_answers_are_cut_and_flagged(tokenizer):
    conv = _conversation(("q", "word " * 50))
    encoded = encode(conv.segments("skyeye"), tokenizer, TOKENS_PER_IMAGE, max_answer_tokens=5)
    assert encoded.truncated
    assert sum(label != IGNORE_INDEX for label in encoded.labels) == 5 + 1


def test_collate_pads_right_for_training_and_left_for_generation(tokenizer):
    short = encode(_conversation(("q", "a")).segments("skyeye"), tokenizer, TOKENS_PER_IMAGE)
    long = encode(
        _conversation(("a longer question here", "and a longer answer too")).segments("skyeye"),
        tokenizer,
        TOKENS_PER_IMAGE,
    )
    right = collate([short, long], tokenizer.pad_token_id, "right")
    pad = len(long) - len(short)
    assert pad > 0
    assert right["attention_mask"][0].tolist() == [1] * len(short) + [0] * pad
    assert right["labels"][0, len(short) :].eq(IGNORE_INDEX).all()
    assert right["labels"][0, : len(short)].tolist() == short.labels
    assert right["image_mask"][0, len(short) :].sum() == 0
    left = collate([short, long], tokenizer.pad_token_id, "left")
    assert left["input_ids"][0, pad:].tolist() == short.input_ids
    assert left["attention_mask"][0, :pad].sum() == 0


def test_model_loss_is_the_mean_over_learned_tokens_of_a_padded_batch(small_model, tokenizer):
    tokens = small_model.cfg.visual_tokens_per_image
    samples = [
        encode(_conversation(("q", "a")).segments("skyeye"), tokenizer, tokens),
        encode(
            _conversation(("longer question", "a much longer answer"), ("again?", "no")).segments("skyeye"),
            tokenizer,
            tokens,
        ),
    ]
    batch = collate(samples, tokenizer.pad_token_id, "right")
    pixels = torch.randn(2, 3, 56, 56)
    out = small_model(pixels=pixels, **batch)

    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    targets = batch["labels"][:, 1:].reshape(-1)
    manual = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    learned = sum(sum(label != IGNORE_INDEX for label in s.labels) for s in samples)
    assert torch.allclose(out.loss, manual / learned, atol=1e-5)

    alone = small_model(pixels=pixels[:1], **collate(samples[:1], tokenizer.pad_token_id, "right"))
    row = slice(0, len(samples[0]))
    assert torch.allclose(alone.logits[0], out.logits[0, row], atol=1e-4), "padding must not change a sample"


def test_backward_reaches_only_trainable_parts(small_model, tokenizer):
    small_model.train()
    sample = encode(_conversation(("q", "a")).segments("skyeye"), tokenizer, small_model.cfg.visual_tokens_per_image)
    small_model(pixels=torch.randn(1, 3, 56, 56), **collate([sample], tokenizer.pad_token_id)).loss.backward()
    for name, param in small_model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
    assert any("lora_B" in n and p.grad.abs().sum() > 0 for n, p in small_model.named_parameters() if p.requires_grad)
