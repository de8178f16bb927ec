"""The fast training step: attention chosen per call, rotary positions, factorized attention,
precision from the machine, and bf16 training that learns like fp32."""

import dataclasses

import pytest
import torch

from conftest import run_cli
from phenaki_cli.config import TRANSFORMER_PRESETS, TransformerConfig
from phenaki_cli.errors import UserError
from phenaki_cli.nn import attention, attention_kernel, rotary_angles, rotate
from phenaki_cli.runtime import machine_precision, resolve_precision
from phenaki_cli.transformer import MaskGIT
from phenaki_cli.transformer.maskgit import carried_tokens
from phenaki_cli.transformer.masking import masked_token_loss


def qkv(n=11, m=None, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(3, 2, n, 16, generator=g)
    k, v = torch.randn(2, 3, 2, m or n, 16, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize("case", ["plain", "causal", "bias", "mask"])
def test_matmul_attention_matches_the_fused_kernel(case):
    q, k, v = qkv()
    kwargs = {"causal": case == "causal"}
    if case == "bias":
        hidden = (torch.rand(11, 11) < 0.3) & ~torch.eye(11, dtype=torch.bool)  # every query keeps itself
        kwargs["bias"] = torch.randn(2, 11, 11).masked_fill(hidden, -torch.inf)
    if case == "mask":
        kwargs["mask"] = (torch.arange(11) < 7).reshape(1, 1, 1, 11)
    fast = attention(q, k, v, **kwargs)  # bf16 on CPU, 11 keys: the matrix-product path
    with attention_kernel("fused"):
        fused = attention(q, k, v, **kwargs)
    reference = attention(q.float(), k.float(), v.float(), **kwargs)  # fp32: always the fused kernel
    torch.testing.assert_close(fast.float(), reference, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(fused.float(), reference, atol=3e-2, rtol=3e-2)


def test_matmul_attention_is_causal():
    q, k, v = qkv()
    changed_v = v.clone()
    changed_v[..., 6:, :] += 1
    a, b = attention(q, k, v, causal=True), attention(q, k, changed_v, causal=True)
    assert torch.equal(a[..., :6, :], b[..., :6, :]) and not torch.equal(a[..., 6:, :], b[..., 6:, :])


def test_unknown_attention_kernel_is_refused():
    with pytest.raises(ValueError, match="choose one of auto, fused"):
        with attention_kernel("flash"):
            pass


def test_rotary_attention_depends_on_offsets_only():
    """q·k of rotated vectors at positions (i, j) equals that at (i + s, j + s), in every axis."""
    angles = rotary_angles((5, 6, 7), 32).reshape(5, 6, 7, 16)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 32, generator=g)

    def score(a, b):
        return (rotate(q[None], angles[a].reshape(1, 16)) * rotate(k[None], angles[b].reshape(1, 16))).sum()

    reference = score((1, 2, 3), (2, 0, 5))
    assert torch.allclose(score((3, 3, 4), (4, 1, 6)), reference, atol=1e-5)
    assert not torch.allclose(score((1, 2, 3), (2, 1, 5)), reference, atol=1e-3)


@pytest.mark.parametrize("attention_kind,positions,group,carry,text_layers", [
    ("full", "rotary", 1, False, 0), ("factorized", "absolute", 1, False, 0), ("factorized", "rotary", 1, False, 0),
    ("factorized", "rotary", 2, False, 0), ("full", "absolute", 2, False, 0), ("factorized", "rotary", 2, True, 0),
    ("factorized", "rotary", 2, False, 2)])
def test_transformer_designs_run_and_learn(attention_kind, positions, group, carry, text_layers):
    config = dataclasses.replace(TRANSFORMER_PRESETS["tiny"], attention=attention_kind, positions=positions,
                                 token_group=group, carry_forward=carry, text_layers=text_layers)
    torch.manual_seed(0)
    model = MaskGIT(config)
    assert hasattr(model, "time_position") == (positions == "absolute")
    tokens = torch.randint(0, config.vocab_size, (2, 3, 4, 4))
    text, text_mask = torch.randn(2, 5, config.text_dim), torch.ones(2, 5, dtype=torch.bool)
    logits = model(tokens, model.prepare(text, text_mask, 3))
    assert logits.shape == (2, 3, 4, 4, config.vocab_size)
    only = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.3  # training's masked-only path
    torch.testing.assert_close(model(tokens, model.prepare(text, text_mask, 3), only=only), logits[only])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss(seed):
        return masked_token_loss(model, tokens, text, text_mask, torch.zeros(2, dtype=torch.long), 0.5,
                                 torch.Generator().manual_seed(seed))[0]

    before = loss(1234).item()
    loss(0).backward()
    if text_layers:  # the text blocks start as the identity: their inner weights get gradients after one update
        optimizer.step()
        optimizer.zero_grad()
        loss(1).backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert silent in ([], ["null_text"])  # every weight learns (the null text only when a row drops its text)
    for step in range(40):  # one batch, learned by heart
        optimizer.zero_grad()
        loss(step).backward()
        optimizer.step()
    assert loss(1234).item() < 0.85 * before


def test_carried_tokens_are_the_nearest_given_ones_at_each_place():
    """A [MASK] carries the latest given token at its (row, col) before it, else the earliest after it
    (a rewind); given positions and places with nothing given carry nothing (the mask id)."""
    m = 9
    columns = torch.tensor([[5, 6, m, 1],   # time step 0
                            [m, m, m, m],
                            [7, m, m, 2],
                            [m, m, m, m]])   # (T, places): place 2 has nothing given
    tokens = columns.view(1, 4, 1, 4)  # (b, T, h, w)
    expected = torch.tensor([[m, m, m, m],
                             [5, 6, m, 1],
                             [m, 6, m, m],
                             [7, 6, m, 2]])
    assert torch.equal(carried_tokens(tokens, m)[0, :, 0], expected)
    rewind = torch.tensor([m, m, 3, m]).view(1, 4, 1, 1)
    assert torch.equal(carried_tokens(rewind, m).flatten(), torch.tensor([3, 3, m, 3]))


def test_text_layers_let_the_transformer_read_word_order():
    """Cross-attention alone sees the text as a set: states in another order give the same logits. With
    text_layers (once trained, here: randomised) the order matters; padding is never read; and fresh text
    layers add nothing, so a trained model fine-tuned with them added starts from what it did."""
    plain_config = dataclasses.replace(TRANSFORMER_PRESETS["tiny"], attention="factorized", positions="rotary")
    torch.manual_seed(0)
    plain = MaskGIT(plain_config).eval()
    reading = MaskGIT(dataclasses.replace(plain_config, text_layers=2)).eval()
    missing, unexpected = reading.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(name.startswith("text_blocks.") for name in missing)
    tokens = torch.randint(0, plain_config.vocab_size, (1, 2, 4, 4))
    text = torch.randn(1, 6, plain_config.text_dim)
    text_mask = torch.tensor([[True] * 5 + [False]])
    reordered = text[:, [3, 1, 4, 0, 2, 5]]

    def logits(model, states):
        with torch.no_grad():
            return model(tokens, model.prepare(states, text_mask, 2))

    torch.testing.assert_close(logits(plain, reordered), logits(plain, text))
    torch.testing.assert_close(logits(reading, text), logits(plain, text))  # the identity at the start
    with torch.no_grad():
        for parameter in reading.text_blocks.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    assert not torch.allclose(logits(reading, reordered), logits(reading, text), atol=1e-3)
    padded_differently = text.clone()
    padded_differently[:, 5] = torch.randn(plain_config.text_dim)
    torch.testing.assert_close(logits(reading, padded_differently), logits(reading, text))
    with pytest.raises(UserError, match="text_layers need an even dim_head that divides text_dim"):
        dataclasses.replace(plain_config, text_layers=1, dim_head=6).validate()


def test_fresh_cross_attention_forgets_the_text_and_keeps_the_rest():
    """`reset_cross_attention` makes a trained model ignore its prompt (any text, and none, give the same
    logits) while every weight outside the cross-attention stays; one training step then reads it again."""
    config = dataclasses.replace(TRANSFORMER_PRESETS["tiny"], attention="factorized", positions="rotary", text_layers=1)
    torch.manual_seed(0)
    model = MaskGIT(config).eval()
    with torch.no_grad():  # a "trained" model: its text layers are no longer the identity
        for parameter in model.text_blocks.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = torch.randint(0, config.vocab_size, (2, 2, 4, 4))
    text = torch.randn(2, 5, config.text_dim)

    def logits(states, drop=None):
        with torch.no_grad():
            return model(tokens, model.prepare(states, None, 2, drop))

    assert not torch.allclose(logits(text), logits(torch.randn_like(text)), atol=1e-3)
    model.reset_cross_attention()
    torch.testing.assert_close(logits(text), logits(torch.randn_like(text)))
    torch.testing.assert_close(logits(text), logits(text, drop=torch.tensor([True, True])))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".cross." in k for k in changed)
    model.train()
    loss, _ = masked_token_loss(model, tokens, text, None, torch.zeros(2, dtype=torch.long), 0.0,
                                torch.Generator().manual_seed(0))
    loss.backward()
    assert all(block.cross.to_out.weight.grad.abs().sum() > 0 for block in model.blocks)


def test_factorized_rotary_transformer_is_the_same_at_every_place():
    """With rotary positions and factorized attention a token's logits depend on its neighbourhood
    only through offsets: a grid that is the same along time gives the same logits at every step."""
    config = dataclasses.replace(TRANSFORMER_PRESETS["tiny"], attention="factorized", positions="rotary")
    torch.manual_seed(0)
    model = MaskGIT(config).eval()
    tokens = torch.randint(0, config.vocab_size, (1, 1, 4, 4)).expand(1, 4, 4, 4)
    text = torch.randn(1, 5, config.text_dim)
    with torch.no_grad():
        logits = model(tokens, model.prepare(text, None, 4))
    for step in range(1, 4):
        torch.testing.assert_close(logits[0, step], logits[0, 0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("field,value", [("attention", "sparse"), ("positions", "alibi")])
def test_bad_transformer_design_names_the_field(field, value):
    with pytest.raises(UserError, match=f"{field} must be one of"):
        TransformerConfig(**{field: value}).validate()


def test_token_groups_are_positions_of_the_token_grid():
    """token_group 2: each 2×2 square of tokens is one position. A token changed inside a square changes
    the logits of that square's four tokens (they share a position) once the blocks add nothing (no
    mixing of positions); a grid the group does not divide is refused, naming both."""
    config = dataclasses.replace(TRANSFORMER_PRESETS["tiny"], token_group=2)
    torch.manual_seed(0)
    model = MaskGIT(config).eval()
    for name, parameter in model.blocks.named_parameters():
        if ".to_out." in name or name.split(".")[1:3] == ["ff", "2"]:  # each residual branch's last layer
            torch.nn.init.zeros_(parameter)
    tokens = torch.randint(0, config.vocab_size, (1, 1, 4, 4))
    changed = tokens.clone()
    changed[0, 0, 2, 1] = (changed[0, 0, 2, 1] + 1) % config.vocab_size
    context = model.prepare(torch.randn(1, 5, config.text_dim), None, 1)
    with torch.no_grad():
        moved = (model(tokens, context) - model(changed, context)).abs().amax(-1)[0, 0] > 0
    square = torch.zeros(4, 4, dtype=torch.bool)
    square[2:, :2] = True
    assert torch.equal(moved, square)
    with pytest.raises(UserError, match="token_group 3 does not divide the 4×4 token grid"):
        dataclasses.replace(config, token_group=3).validate()


def test_precision_from_the_machine():
    chosen, why = machine_precision(torch.device("cpu"))
    assert chosen in ("bf16", "fp32") and why
    assert resolve_precision(torch.device("cpu"), "auto") == chosen
    assert resolve_precision(torch.device("cpu"), "fp32") == "fp32"
    code, out, err = run_cli("info", "--json")
    assert code == 0, err
    assert '"training_precision": {"auto": "%s"' % chosen in out


def test_bf16_training_follows_the_fp32_loss_curve():
    """300 steps of the tiny transformer from one seed: bf16 autocast (fast attention) and fp32 give
    loss curves that agree within 5 % (averaged over 50-step stretches)."""
    curves = {}
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, 64, (32, 3, 4, 4), generator=g)  # a small vocabulary: learnable in 300 steps
    text = torch.randn(32, 5, TRANSFORMER_PRESETS["tiny"].text_dim, generator=g)
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = MaskGIT(TRANSFORMER_PRESETS["tiny"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        losses = []
        for step in range(300):
            pick = torch.Generator().manual_seed(step)
            index = torch.randint(0, 32, (8,), generator=pick)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss, _ = masked_token_loss(model, data[index], text[index], torch.ones(8, 5, dtype=torch.bool),
                                            torch.zeros(8, dtype=torch.long), 0.1, pick)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        curves[precision] = torch.tensor(losses).reshape(6, 50).mean(1)
    assert curves["fp32"][-1] < 0.8 * curves["fp32"][0]  # it learned something
    torch.testing.assert_close(curves["bf16"], curves["fp32"], rtol=0.05, atol=0)

