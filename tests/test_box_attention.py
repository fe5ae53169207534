"""The box attention loss (train/box_attention.py): which positions and cells it supervises, and what it teaches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from skyeye.model.config import VisionConfig
from skyeye.train.box_attention import BoxAttentionTargets, box_attention_loss, return_weights_in
from skyeye.train.config import TrainConfig

from conftest import small_config


def _config():
    """A 4 x 4 grid of one-patch visual tokens (cells 25 grid units wide) in front of a 2-layer decoder."""
    vision = VisionConfig(image_size=56, patch_size=14, width=32, depth=2, heads=2, mlp_dim=64)
    return small_config(vision=vision, merge_tokens=1, tokenizer="bundled:tokenizer-tiny")


def _sample(tokenizer, question: str, answer: str):
    """input ids, labels and image mask of: 16 image slots, the question (not learned), the answer (learned)."""
    asked = tokenizer(question, add_special_tokens=False)["input_ids"]
    answered = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = [tokenizer.bos_token_id] + [tokenizer.pad_token_id] * 16 + asked + answered
    labels = [-100] * (1 + 16 + len(asked)) + answered
    image_mask = [False] + [True] * 16 + [False] * (len(asked) + len(answered))
    return torch.tensor([ids]), torch.tensor([labels]), torch.tensor([image_mask]), 1 + 16 + len(asked)


def test_the_four_positions_before_an_answer_boxs_numbers_look_at_the_cells_it_covers(tokenizer):
    targets = BoxAttentionTargets(_config(), tokenizer)
    question = "[identify] {<0><0><10><10>} what is it?"  # a box in the question is not an answer
    ids, labels, image_mask, answer_start = _sample(tokenizer, question, "<p>bridge</p> {<30><55><45><60>}")
    queries, keys = targets(labels, image_mask)
    answer = ids[0, answer_start:].tolist()
    first_number = answer_start + answer.index(tokenizer.convert_tokens_to_ids("<30>"))
    assert queries[0].nonzero().flatten().tolist() == list(range(first_number - 1, first_number + 3))
    # x 30..45 lies in column 1 (25..50), y 55..60 in row 2 (50..75): one cell, the visual token at 1 + 2 * 4 + 1
    for query in range(first_number - 1, first_number + 3):
        assert keys[0, query].nonzero().flatten().tolist() == [1 + 2 * 4 + 1]
    assert keys.sum() == 4


def test_a_box_over_cell_borders_covers_every_cell_it_touches_and_rows_without_one_image_are_left_out(tokenizer):
    targets = BoxAttentionTargets(_config(), tokenizer)
    _, labels, image_mask, _ = _sample(tokenizer, "[refer] the field", "{<20><20><30><80>}")
    queries, keys = targets(labels, image_mask)
    covered = keys[0, queries[0].nonzero()[0, 0]].nonzero().flatten().tolist()
    assert covered == [1 + row * 4 + column for row in range(4) for column in (0, 1)]
    no_image = image_mask.clone()
    no_image[0, 1:9] = False  # 8 visual tokens: not the one image whose cells the grid describes
    assert targets.rows_left_out == 0
    assert not targets(labels, no_image)[0].any()
    assert targets.rows_left_out == 1
    _, no_box, _, _ = _sample(tokenizer, "[refer] the field", "a field")
    targets(no_box, no_image)  # nothing to supervise: not counted as left out
    assert targets.rows_left_out == 1


def test_the_loss_alone_teaches_the_chosen_heads_to_look_at_the_box(tokenizer):
    from skyeye.model.skyeye import SkyEye

    torch.manual_seed(0)
    model = SkyEye(dataclasses.replace(_config(), trainable=["llm"]), tokenizer)
    return_weights_in(model.llama_model, [1])
    targets = BoxAttentionTargets(model.cfg, tokenizer)
    ids, labels, image_mask, _ = _sample(tokenizer, "[refer] the field", "{<55><5><70><20>}")
    queries, keys = targets(labels, image_mask)
    pixels = torch.randn(1, 3, 56, 56)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def loss():
        output = model(ids, image_mask, torch.ones_like(ids), pixels=pixels, output_attentions=True)
        return box_attention_loss(output.attentions, queries, keys, heads=[0])

    first = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    # −log of the mass on the one covered cell: from about a cell's share of the context to more than half
    assert first > 2.0 and loss().item() < -torch.tensor(0.5).log().item()


def test_no_box_in_the_batch_gives_no_loss_and_bad_settings_are_named(tokenizer):
    targets = BoxAttentionTargets(_config(), tokenizer)
    ids, labels, image_mask, _ = _sample(tokenizer, "[caption] describe", "a river")
    queries, keys = targets(labels, image_mask)
    attentions = (torch.rand(1, 4, ids.shape[1], ids.shape[1]),) * 2
    assert box_attention_loss(attentions, queries, keys, [0]) is None
    with pytest.raises(Exception, match="box_attention.weight must be >= 0"):
        TrainConfig.from_dict({"data": [{"records": "x"}], "box_attention": {"weight": -1}}, "t.yaml")


def test_only_the_chosen_layers_run_eager_attention_and_the_model_computes_the_same(tokenizer):
    from skyeye.model.skyeye import SkyEye

    torch.manual_seed(0)
    model = SkyEye(_config(), tokenizer).eval()
    ids, _, image_mask, _ = _sample(tokenizer, "[refer] the field", "{<55><5><70><20>}")
    pixels = torch.randn(1, 3, 56, 56)

    def run():
        return model(ids, image_mask, torch.ones_like(ids), pixels=pixels, output_attentions=True)

    plain = run()  # sdpa everywhere: no weights
    model.llama_model.set_attn_implementation("eager")
    everywhere = run()
    return_weights_in(model.llama_model, [1])
    chosen = run()
    assert len(plain.attentions) == 0 and len(everywhere.attentions) == 2 and len(chosen.attentions) == 1
    assert torch.allclose(chosen.attentions[0], everywhere.attentions[1], atol=1e-6)
    assert torch.allclose(chosen.logits, plain.logits, atol=1e-5)
    assert torch.allclose(chosen.logits, everywhere.logits, atol=1e-5)
