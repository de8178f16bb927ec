"""Where a Shapes World transformer fails: drawing from text, or carrying objects on in time. Prints JSON.

    python bench/transformer_probe.py [MODEL_DIR ...] [--scenes N] [--teacher-forced]
                                                                   # default: the shipped model

A full `phenaki eval --generate` says *that* a model fails; this says *where*, in about two
minutes a model on 2 cores, so a training run can be watched between checkpoints. Over N
one-scene test stories (seeds fixed):

- `first_frame`: text → the first frame alone (a one-time-step window, MaskGIT with the model's
  sampling settings); `presence` is the share of clauses whose object the analyser finds there
  with its colour and shape. `tokenizer_presence` is the same for the true first frame through
  the tokenizer: the best the transformer can do.
- `next_step_tokens`: teacher forcing. Given the true tokens of time steps < s and the text,
  the transformer's most likely token at step s (s = 1 and 3) against the true one, apart for
  "object" positions (the true code differs from that step's most common code, i.e. anything
  but plain background) and the rest. The object positions are split again by whether the true
  code equals the previous step's (`_unchanged`: copying it would be right) or not (`_changed`);
  `object_copy_share` is the share of object positions where copying is right.
  `next_step_tokens_guided`: the same, argmax of the logits with the model's classifier-free guidance
  (its sampling setting, as `story` samples them): guidance pushes the prediction towards what the text
  says, so at step 1, where only the text can say how an object moves, the changed tokens read how much
  motion the text gives when sampling, which the plain conditional argmax hides.
- `verb_reading`: whether the text's verbs reach the objects they belong to. Teacher-forced as
  above, the mean negative log-likelihood of the true object tokens at steps 1–3 rises by
  `wrong_verb` (nats) when a one-object scene's verb is replaced by another (moves left ↔ right,
  up ↔ down, grows ↔ shrinks, anything else ↔ stays still), and by `swapped_verbs` when a
  two-object scene's two verbs are swapped between its objects. A model that reads verbs has
  `wrong_verb` > 0; one that also knows which verb is whose has `swapped_verbs` > 0 (0: it reads
  the prompt as a bag of words).
  Beside them, how many scenes each figure rests on and the standard error of its mean: only
  two-object scenes with two different verbs count for `swapped_verbs`.
  `verb_reading_step_1` is the same at step 1 alone: given only the first frame, no motion can be
  seen yet, so the text is the only source of it; at steps 2–3 a model can also read the motion off
  the given earlier steps, so the 1–3 mean mixes the two.
  `--teacher-forced` reports these figures and the token figures alone, without generating
  (a few seconds a scene), to watch a run between full probes.
- `scene_accuracy`: the analyser's clause accuracy over the whole scene generated from text
  (`from_text`, what `story` does) and from the true first frame (`from_true_first_frame`,
  image-to-video). If the second is not much better than the first, a better first frame
  will not help: continuing in time is what fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from phenaki_cli.codec import decode_grid, encode_frames
from phenaki_cli.data.shapes_sampler import sample_rendered_story
from phenaki_cli.eval.analyser import analyse, find_blobs, match
from phenaki_cli.pipeline import Phenaki
from phenaki_cli.sampling import guided_logits, prepare_guided

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "shapes-64"
SCENE_FRAMES = 16
OTHER_ACTION = {"moves left": "moves right", "moves right": "moves left", "moves up": "moves down",
                "moves down": "moves up", "grows": "shrinks", "shrinks": "grows", "stays still": "moves right"}


def found(frame: np.ndarray, caption) -> list[bool]:
    blobs = find_blobs(frame[None], [caption.background])[0]
    return [match(blobs, clause.color, clause.shape) is not None for clause in caption.clauses]


def altered(caption):
    """The caption with its verbs changed: one object's verb replaced, or two objects' swapped (None if
    that changes nothing)."""
    clauses = caption.clauses
    if len(clauses) == 1:
        action = OTHER_ACTION.get(clauses[0].action, "stays still")
        return "wrong_verb", dataclasses.replace(caption, clauses=(dataclasses.replace(clauses[0], action=action),))
    if clauses[0].action == clauses[1].action:
        return None, None
    return "swapped_verbs", dataclasses.replace(caption, clauses=(dataclasses.replace(clauses[0], action=clauses[1].action),
                                                                  dataclasses.replace(clauses[1], action=clauses[0].action)))


def next_step(transformer, true: torch.Tensor, context, mask_id: int, step: int, guidance: float = 1.0,
              codebook_size: int | None = None):
    """Teacher forcing: the logits (h, w, vocab) of time step `step` given the true earlier steps (guided
    when `context` is `prepare_guided`'s for that `guidance`), the true tokens there, and where they are
    objects (not that step's most common code)."""
    given = true.clone()
    given[:, step:] = mask_id
    target = true[0, step]
    logits = guided_logits(transformer, given, context, guidance, codebook_size or transformer.config.vocab_size)
    return logits[0, step], target, target != target.flatten().mode().values


def object_nll(transformer, true: torch.Tensor, context, mask_id: int) -> dict[int, float]:
    """NLL of the true object tokens at each of steps 1–3 (where it has any), given the true earlier steps."""
    values = {}
    for step in (s for s in (1, 2, 3) if s < true.shape[1]):
        logits, target, is_object = next_step(transformer, true, context, mask_id, step)
        if is_object.any():
            log_p = logits.float().log_softmax(-1).gather(-1, target[..., None])[..., 0]
            values[step] = -log_p[is_object].mean().item()
    return values


def clause_accuracy(video: np.ndarray, caption) -> list[bool]:
    return [c.ok for c in analyse(video, [caption], [(0, len(video))]).clauses]


@torch.inference_mode()
def probe(model_dir: Path, scenes: int, generate: bool = True) -> dict:
    model = Phenaki.from_pretrained(model_dir)
    transformer, tokenizer, settings = model.transformer, model.tokenizer, model.settings()
    mask_id = transformer.config.mask_id
    drawn, ceiling, from_text, from_first = [], [], [], []
    kinds = ("object", "background", "object_unchanged", "object_changed")
    tokens_right = {f"step_{s}_{kind}": [] for s in (1, 3) for kind in kinds}
    tokens_right_guided = {f"step_{s}_{kind}": [] for s in (1, 3) for kind in kinds}
    copy_share = []
    verb_gain = {"wrong_verb": [], "swapped_verbs": []}
    verb_gain_step_1 = {"wrong_verb": [], "swapped_verbs": []}
    for index in range(scenes):
        story = sample_rendered_story("test", index, scenes=(1, 1), frames_per_scene=SCENE_FRAMES + 1,
                                      size=tokenizer.config.image_size)
        caption, frames = story.captions[0], story.rendering.frames
        text = model.text_encoder.embed(caption.text())[None]
        text_mask = torch.ones(text.shape[:2], dtype=torch.bool)

        # text → first frame alone: a one-frame scene is a one-time-step window
        if generate:
            drawn += found(next(model.generate([(caption.text(), 1)], seed=index))[1][0], caption)
        grid = encode_frames(tokenizer, frames[:settings.window_frames])  # (T, h, w): one window
        ceiling += found(decode_grid(tokenizer, grid[:1])[0], caption)
        true = torch.from_numpy(grid.astype(np.int64))[None]

        # the next time step's tokens given the true earlier ones (argmax: conditional model, and guided)
        context = prepare_guided(transformer, text, text_mask, true.shape[1], 1.0)
        guided_context = prepare_guided(transformer, text, text_mask, true.shape[1], settings.guidance)
        for step in (s for s in (1, 3) if s < true.shape[1]):
            for right, ctx, guidance in ((tokens_right, context, 1.0),
                                         (tokens_right_guided, guided_context, settings.guidance)):
                logits, target, is_object = next_step(transformer, true, ctx, mask_id, step, guidance,
                                                      tokenizer.config.codebook_size)
                predicted = logits.argmax(-1)
                unchanged = target == true[0, step - 1]
                for kind, where in (("object", is_object), ("background", ~is_object),
                                    ("object_unchanged", is_object & unchanged),
                                    ("object_changed", is_object & ~unchanged)):
                    if where.any():
                        right[f"step_{step}_{kind}"].append((predicted[where] == target[where]).float().mean().item())
            if is_object.any():
                copy_share.append(unchanged[is_object].float().mean().item())
        kind, other = altered(caption)
        if kind is not None:
            other_text = model.text_encoder.embed(other.text())[None]
            other_context = prepare_guided(transformer, other_text, torch.ones(other_text.shape[:2], dtype=torch.bool),
                                           true.shape[1], 1.0)
            # the object positions depend on the true tokens alone, so both captions score the same steps
            nll_other = object_nll(transformer, true, other_context, mask_id)
            nll = object_nll(transformer, true, context, mask_id)
            if nll:
                verb_gain[kind].append(float(np.mean([nll_other[s] - nll[s] for s in nll])))
            if 1 in nll:
                verb_gain_step_1[kind].append(nll_other[1] - nll[1])

        if not generate:
            continue
        # the whole scene, from text and from the true first frame
        scene = [(caption.text(), SCENE_FRAMES)]
        from_text += clause_accuracy(np.concatenate([f for _, f in model.generate(scene, seed=index)]), caption)
        continued = np.concatenate([f for _, f in model.generate(scene, seed=index, start_frames=frames[:1])])
        from_first += clause_accuracy(np.concatenate([frames[:1], continued[:SCENE_FRAMES - 1]]), caption)

    def mean(values) -> float | None:
        return round(float(np.mean(values)), 3) if values else None

    def standard_error(values) -> float | None:
        return round(float(np.std(values, ddof=1) / np.sqrt(len(values))), 3) if len(values) > 1 else None

    return {"model": str(model_dir), "scenes": scenes, "clauses": len(ceiling),
            "first_frame": {"presence": mean(drawn), "tokenizer_presence": mean(ceiling)},
            "next_step_tokens": {key: mean(values) for key, values in tokens_right.items()},
            "object_copy_share": mean(copy_share),
            "guidance": settings.guidance,
            "next_step_tokens_guided": {key: mean(values) for key, values in tokens_right_guided.items()},
            "verb_reading": {key: mean(values) for key, values in verb_gain.items()},
            # how far to trust the two figures above: scenes behind each, and the standard error of its mean
            "verb_reading_scenes": {key: len(values) for key, values in verb_gain.items()},
            "verb_reading_error": {key: standard_error(values) for key, values in verb_gain.items()},
            # step 1 alone: given only the first frame, no motion is visible yet, so the text is all there is
            "verb_reading_step_1": {key: mean(values) for key, values in verb_gain_step_1.items()},
            "verb_reading_step_1_error": {key: standard_error(values) for key, values in verb_gain_step_1.items()},
            "scene_accuracy": {"from_text": mean(from_text), "from_true_first_frame": mean(from_first)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=[SHIPPED])
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--teacher-forced", action="store_true", help="only the figures that need no generation")
    args = parser.parse_args()
    for model_dir in args.models:
        print(json.dumps(probe(model_dir, args.scenes, generate=not args.teacher_forced)))


if __name__ == "__main__":
    main()
