import dataclasses

import pytest
import torch
import torch.nn.functional as F

from phenaki_cli.config import TOKENIZER_PRESETS, TokenizerConfig
from phenaki_cli.data.shapes_world import render_story
from phenaki_cli.errors import UserError
from phenaki_cli.nn import sinusoidal_table
from phenaki_cli.tokenizer import CViViT
from phenaki_cli.video_io import frames_to_tensor

TINY = TOKENIZER_PRESETS["tiny"]
REFINED = dataclasses.replace(TINY, refine_channels=8, refine_features=4)
DEEPER = dataclasses.replace(REFINED, refine_blocks=2)
# tokens that mean the same everywhere: no time positions, local attention in encoder and decoder
STATIONARY = dataclasses.replace(REFINED, time_encoding="stationary", encoder_window=1, decoder_window=1)


def model(config=TINY, seed=0):
    torch.manual_seed(seed)
    return CViViT(config).eval()


@pytest.mark.parametrize("config", [TINY, STATIONARY], ids=["absolute", "stationary"])
@pytest.mark.parametrize("frames", [1, 3, 5, 9, 17])
def test_token_grid_shape_for_any_valid_length(frames, config):
    m = model(config)
    video = torch.rand(2, frames, 3, 32, 32)
    with torch.no_grad():
        tokens = m.encode(video)
        assert tokens.shape == (2, 1 + (frames - 1) // 2, 4, 4)
        assert m.token_shape(frames) == tokens.shape[1:]
        assert m.decode(tokens).shape == video.shape


@pytest.mark.parametrize("frames", [0, 2, 4, 16])
def test_invalid_frame_count_is_a_clear_error(frames):
    with pytest.raises(UserError, match=rf"got {frames} frames; the tokenizer takes 1 \+ 2·n"):
        model().encode(torch.rand(1, frames, 3, 32, 32))


def test_wrong_frame_size_is_a_clear_error():
    with pytest.raises(UserError, match="3×64×64; this tokenizer takes 3×32×32"):
        model().encode(torch.rand(1, 5, 3, 64, 64))


@pytest.mark.parametrize("time_encoding", ["absolute", "stationary"])
@pytest.mark.parametrize("kept_steps", [1, 2, 4])
def test_encoder_is_causal(kept_steps, time_encoding):
    """Changing frames after time step k leaves tokens 0..k exactly unchanged (through every layer)."""
    config = TokenizerConfig(image_size=32, dim=64, spatial_depth=2, temporal_depth=2, heads=2, dim_head=32,
                             codebook_size=64, code_dim=8, time_encoding=time_encoding)
    m = model(config)
    video = torch.rand(1, 17, 3, 32, 32)
    changed = video.clone()
    start = 1 + 2 * (kept_steps - 1)  # first frame of time step `kept_steps`
    changed[:, start:] = torch.rand_like(changed[:, start:])
    with torch.no_grad():
        a, b = m.encode_latents(video), m.encode_latents(changed)
        assert torch.equal(a[:, :kept_steps], b[:, :kept_steps])
        assert not torch.allclose(a[:, kept_steps:], b[:, kept_steps:])
        assert torch.equal(m.encode(video)[:, :kept_steps], m.encode(changed)[:, :kept_steps])


@pytest.mark.parametrize("config", [TINY, REFINED, DEEPER, STATIONARY],
                         ids=["linear", "refine-head", "refine-blocks", "stationary"])
def test_decoder_is_causal(config):
    """Frames of time steps 0..k decode from tokens 0..k alone (the refinement head too)."""
    m = model(config)
    if config.refine_channels:  # a trained head: its zero-initialised last layers would hide any leak
        for last in [m.refine.net[-1]] + [block[-1] for block in m.refine.blocks]:
            torch.nn.init.normal_(last.weight, std=0.1)
    tokens = torch.randint(0, TINY.codebook_size, (1, 5, 4, 4))
    changed = tokens.clone()
    changed[:, 3:] = torch.randint(0, TINY.codebook_size, (1, 2, 4, 4))
    with torch.no_grad():
        a, b = m.decode(tokens), m.decode(changed)
    assert torch.equal(a[:, :5], b[:, :5])  # time steps 0, 1, 2 = frames 0..4
    assert not torch.equal(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("radius", [1, 2])
def test_windowed_encoder_tokens_see_only_nearby_patches(radius):
    """With encoder_window r, a patch's latent depends on patches at most depth·r away (per axis),
    so a change in one corner leaves the far background's tokens exactly as they were."""
    config = dataclasses.replace(TINY, image_size=64, encoder_window=radius, spatial_depth=2)
    m = model(config)
    video = torch.rand(1, 5, 3, 64, 64)
    changed = video.clone()
    changed[..., :8, :8] = torch.rand_like(changed[..., :8, :8])  # patch (0, 0) in every frame
    with torch.no_grad():
        moved = (m.encode_latents(video) - m.encode_latents(changed)).abs().amax(dim=(0, 1, 4)) > 0
    reach = 2 * radius + 1  # rows/cols 0..2r: two layers of radius r
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:reach, :reach] = True
    assert torch.equal(moved, expected)


def test_windowed_encoder_is_causal_and_keeps_the_all_to_all_default():
    config = dataclasses.replace(TINY, encoder_window=1)
    m = model(config)
    assert not hasattr(m, "encoder_spatial_pos") and hasattr(model(), "encoder_spatial_pos")
    video = torch.rand(1, 9, 3, 32, 32)
    changed = video.clone()
    changed[:, 5:] = torch.rand_like(changed[:, 5:])
    with torch.no_grad():
        assert torch.equal(m.encode_latents(video)[:, :3], m.encode_latents(changed)[:, :3])
    with pytest.raises(UserError, match="encoder_window must be >= 0, got -1"):
        dataclasses.replace(TINY, encoder_window=-1).validate()


def test_stationary_tokens_keep_their_code_at_every_time_step():
    """A still scene gets the same tokens at every time step, the first frame's included, and decodes
    to the same frame; the absolute time table of the paper's design does not."""
    still = frames_to_tensor(render_story(["a big red circle stays still and a blue square stays still"], 17,
                                          size=32, seed=1).frames)[None]
    with torch.no_grad():
        for config, expected in ((STATIONARY, True), (TINY, False)):
            tokens = model(config).encode(still)
            assert torch.equal(tokens, tokens[:, :1].expand_as(tokens)) == expected
        frames = model(STATIONARY).decode(tokens[:, :1].expand_as(tokens))
    tubelets = frames[:, 1:].reshape(1, 8, 2, 3, 32, 32)  # every step decodes to the same tubelet,
    torch.testing.assert_close(tubelets, tubelets[:, :1].expand_as(tubelets), atol=1e-5, rtol=0)
    torch.testing.assert_close(frames[:, 0], tubelets[:, 0, 1], atol=1e-5, rtol=0)  # the first frame its last
    assert not hasattr(model(STATIONARY), "embed_first") and hasattr(model(), "embed_first")


def test_windowed_decoder_draws_each_patch_from_nearby_tokens():
    """decoder_window r: changing one corner token changes only pixels within depth·r patches of it."""
    config = dataclasses.replace(STATIONARY, image_size=64, refine_channels=0)
    m = model(config)
    tokens = torch.randint(0, config.codebook_size, (1, 3, 8, 8))
    changed = tokens.clone()
    changed[:, :, 0, 0] = (changed[:, :, 0, 0] + 1) % config.codebook_size
    with torch.no_grad():
        moved = (m.decode(tokens) - m.decode(changed)).abs().amax(dim=(0, 1, 2)) > 0  # (H, W)
    patches = moved.reshape(8, 8, 8, 8).any(dim=(1, 3))
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:2, :2] = True  # one spatial layer of radius 1: rows and columns 0 and 1
    assert torch.equal(patches, expected)


def test_refinement_head_starts_as_no_change_and_leaves_tokens_alone():
    """Adding the head to a trained tokenizer changes neither its tokens nor (until it learns) its output."""
    plain, refined = model(TINY), model(REFINED, seed=1)
    refined.load_state_dict(plain.state_dict(), strict=False)
    video = torch.rand(1, 5, 3, 32, 32)
    with torch.no_grad():
        tokens = plain.encode(video)
        assert torch.equal(refined.encode(video), tokens)
        torch.testing.assert_close(refined.decode(tokens), plain.decode(tokens))
    assert refined.token_parameters().keys() == plain.token_parameters().keys()
    assert not any(k.startswith(("decoder_", "to_", "refine", "quantizer.project_out"))
                   for k in refined.token_parameters())


def test_refinement_blocks_deepen_a_trained_head_without_changing_it():
    """Blocks added to a trained head start as the identity: same tokens, same frames; once their
    last layers move, the frames change, and only frame by frame."""
    trained, deeper = model(REFINED), model(DEEPER, seed=1)
    torch.nn.init.normal_(trained.refine.net[-1].weight, std=0.1)  # a head that does something
    missing, unexpected = deeper.load_state_dict(trained.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("refine.blocks.") for k in missing)
    assert all(k.startswith(CViViT.REFINE_PREFIXES) for k in missing)  # a fine-tune may add them
    video = torch.rand(1, 5, 3, 32, 32)
    with torch.no_grad():
        tokens = trained.encode(video)
        assert torch.equal(deeper.encode(video), tokens)
        torch.testing.assert_close(deeper.decode(tokens), trained.decode(tokens))
        torch.nn.init.normal_(deeper.refine.blocks[1][-1].weight, std=0.1)
        assert not torch.allclose(deeper.decode(tokens), trained.decode(tokens))


def test_adversarial_losses_give_each_side_only_its_own_gradient():
    from phenaki_cli.tokenizer.discriminator import FrameDiscriminator, adversarial_losses

    torch.manual_seed(0)
    tokenizer, critic = model().train(), FrameDiscriminator()
    video = torch.rand(2, 5, 3, 32, 32)
    fake = tokenizer(video).reconstruction
    g_loss, d_loss = adversarial_losses(critic, video, fake)
    g_loss.backward(retain_graph=True)
    assert all(p.grad is None for p in critic.parameters())  # the generator's loss does not train the critic
    assert tokenizer.to_rest.weight.grad.abs().sum() > 0
    tokenizer.zero_grad()
    d_loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in tokenizer.parameters())  # nor the critic's the tokenizer
    # (the last bias can sum to zero: with every hinge active, real and fake pull it equally)
    assert all(p.grad is not None for p in critic.parameters())
    assert all(p.grad.abs().sum() > 0 for name, p in critic.named_parameters() if name.endswith("weight"))


def test_code_lookup_ignores_autocast():
    """Under bf16 autocast the nearest code is still chosen in fp32 (rounded scores pick other codes)."""
    m = model()
    latents = torch.randn(2, 3, 4, 4, TINY.dim)
    with torch.no_grad():
        exact = m.quantizer.lookup(latents)[1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(m.quantizer.lookup(latents)[1], exact)


def test_straight_through_gradients_reach_the_encoder():
    m = model().train()
    out = m(torch.rand(1, 5, 3, 32, 32))
    (F.mse_loss(out.reconstruction, torch.rand_like(out.reconstruction)) + out.vq_loss).backward()
    for name in ["embed_first.weight", "embed_rest.weight", "encoder_spatial.0.attn.to_qkv.weight",
                 "quantizer.project_in.weight", "quantizer.codebook"]:
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_dead_codes_are_restarted_from_batch_vectors():
    config = TokenizerConfig(image_size=32, dim=32, spatial_depth=1, temporal_depth=1, heads=1, dim_head=32,
                             codebook_size=512, code_dim=8, dead_code_steps=2)
    m = model(config).train()
    before = m.quantizer.codebook.detach().clone()
    video = torch.rand(1, 3, 3, 32, 32)
    for _ in range(2):
        m(video)
    changed = (m.quantizer.codebook.detach() != before).any(dim=1)
    assert changed.sum() > 400  # 32 tokens per batch cannot use most of 512 codes: those were restarted
    assert (m.quantizer.steps_unused == 0).all()


def test_error_weighted_restart_sends_dead_codes_to_the_worst_fit_vectors():
    """With dead_code_restart "error" a dead code restarts at a vector the codebook fits badly (a rare
    patch), not at one of the many it already fits exactly; "random" lands on the common ones."""
    from phenaki_cli.tokenizer.quantizer import FactorizedVQ

    common, rare = torch.eye(4)[0], torch.eye(4)[1:3]
    batch = torch.cat([common.expand(200, 4), rare])  # 200 vectors on code 0 exactly, 2 far from it
    restarted = {}
    for restart in ("random", "error"):
        torch.manual_seed(0)
        vq = FactorizedVQ(4, 4, 4, 0.25, dead_code_steps=1, dead_code_restart=restart).train()
        with torch.no_grad():
            vq.project_in.weight.copy_(torch.eye(4))
            vq.project_in.bias.zero_()
            vq.codebook.copy_(common.expand(4, 4))  # every vector picks code 0: codes 1–3 die at once
        vq(batch)
        restarted[restart] = vq.normalized_codes()[1:].detach()
    is_rare = (restarted["error"] @ rare.t()).max(dim=1).values > 0.999
    assert is_rare.all()
    assert ((restarted["random"] @ common) > 0.999).all()


def test_object_weight_finds_small_objects_and_weighs_their_error():
    """--object-weight: the pixels of a 4-pixel shape on a plain background are found (whatever the
    background's colour), and a wrong colour there costs more than the same error spread on the background."""
    from phenaki_cli.train.tokenizer import TokenizerObjective, object_pixels

    video = torch.full((1, 3, 3, 32, 32), 0.5)  # gray frames
    video[..., 10:12, 20:22] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # a 2×2 red square
    mask = object_pixels(video)
    assert mask.shape == (1, 3, 1, 32, 32) and mask.sum() == 3 * 4 and mask[..., 10:12, 20:22].eq(1).all()

    class Echo(torch.nn.Module):  # a "tokenizer" whose reconstruction is set by the test
        config = TINY
        def forward(self, video):
            from phenaki_cli.tokenizer.cvivit import TokenizerOutput
            zero = torch.zeros(())
            return TokenizerOutput(self.reconstruction, None, zero, zero, zero)

    echo = Echo()
    wrong_object, wrong_background = video.clone(), video.clone()
    wrong_object[..., 10:12, 20:22] = 0.5  # the square lost
    wrong_background[..., 0:2, 0:2] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # the same error elsewhere
    costs = {}
    for weight in (0.0, 20.0):
        objective = TokenizerObjective(echo, object_weight=weight)
        for name, reconstruction in (("object", wrong_object), ("background", wrong_background)):
            echo.reconstruction = reconstruction
            costs[weight, name] = objective.loss((video, 1))[0].item()
    assert costs[0.0, "object"] == pytest.approx(costs[0.0, "background"])
    assert costs[20.0, "object"] > 5 * costs[20.0, "background"]


def test_time_position_table_is_cached():
    assert sinusoidal_table(9, 64) is sinusoidal_table(9, 64)


def test_tiny_tokenizer_overfits_one_clip():
    """The training path learns: a tiny tokenizer reaches > 30 dB PSNR on one Shapes World clip."""
    torch.manual_seed(0)
    frames = render_story(["a big red circle moves right and a blue square moves down on a gray background"], 5,
                          size=32, seed=3).frames
    video = frames_to_tensor(frames)[None]
    m = CViViT(TINY).train()
    optimizer = torch.optim.AdamW(m.parameters(), lr=1e-3)
    for _ in range(700):
        out = m(video)
        loss = F.mse_loss(out.reconstruction, video) + out.vq_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    m.eval()
    with torch.no_grad():
        mse = F.mse_loss(m.decode(m.encode(video)), video)
    assert -10 * torch.log10(mse) > 30
