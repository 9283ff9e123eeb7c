"""Parity of the Higgs Audio v2 generation model with the ORIGINAL code (boson-multimodal 0.1.1) through golden files.

The fixture ``tests/fixtures/higgs_gen_boson_tiny`` comes from ``tools/goldens/boson_gen/make_goldens.sh``, which
runs the original code once in a separate venv (it needs transformers<4.47; see the fixture README): a tiny random
original-format checkpoint written by the original ``save_pretrained``, a synthetic text tokenizer, and what the
original's serve engine / ``examples/generation.py`` code path produced for six prompts:

* the compact prompt ids (``prepare_chatml_sample`` + generation prompt), the ids after the original's expansion
  of every audio placeholder into one position per delayed frame, the audio-in / audio-out masks and the delayed
  codes at those positions: compared for equality with :func:`~tokenwave.tts.prompt.render_original` (typed
  messages of ``tokenwave.tts.prompt``) and :func:`~tokenwave.tts.generate.prompt_inputs`;
* one forward pass: final hidden states at every position, text logits at a subset of positions, audio logits
  at every audio-out position: compared with our model loaded from the fixture by our loader, within 1e-5 (fp32);
* greedy generations with RAS off (and one seeded sampled generation with RAS): every delayed frame and the text
  stream compared for equality with our :func:`~tokenwave.tts.generate.generate`.

Skips only when the fixture is absent.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import FIXTURES

FOLDER = FIXTURES / "higgs_gen_boson_tiny"
pytestmark = [
    pytest.mark.skipif(not (FOLDER / "goldens.safetensors").is_file(), reason=f"fixture {FOLDER} is absent"),
    pytest.mark.usefixtures("one_thread"),
]

TOL = 1e-5  # fp32; the original and ours differ by a few 1e-6 on logits of magnitude ~10
PROMPT_NAMES = ("clone_scene", "two_speakers_in_context", "speakers_in_system", "multispeaker_descriptions",
                "plain_text", "no_system_two_assistants")
GENERATED = ("clone_scene", "two_speakers_in_context", "speakers_in_system", "plain_text",
             "no_system_two_assistants")


@pytest.fixture(scope="module")
def index():
    return json.loads((FOLDER / "goldens.json").read_text())


@pytest.fixture(scope="module")
def goldens():
    from safetensors.torch import load_file

    return load_file(str(FOLDER / "goldens.safetensors"))


@pytest.fixture(scope="module")
def model():
    from tokenwave.tts.checkpoint import load_pretrained

    return load_pretrained(FOLDER)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenwave.tts.text import TextTokenizer

    return TextTokenizer.from_folder(FOLDER)


def typed_prompts(goldens) -> dict:
    """The script's ChatML messages (goldens.json ``prompts.<name>.messages``) as our typed prompts, with the
    recorded reference codes, and whether the generation prompt forces audio (``force_audio_gen``)."""
    from tokenwave.tts.prompt import (
        DEFAULT_SCENE,
        MULTISPEAKER_SYSTEM_TEXT,
        AssistantMessage,
        Audio,
        Prompt,
        Speaker,
        SystemMessage,
        UserMessage,
    )

    def audio(name):
        return Audio(codes=goldens[f"codes/{name}"], source=name)

    scene = SystemMessage(scene=DEFAULT_SCENE)
    return {
        "clone_scene": (Prompt(scene, (
            UserMessage("The sun rose over the quiet hills."), AssistantMessage(audio("ref_a")),
            UserMessage("Birds sang in the morning light."))), True),
        "two_speakers_in_context": (Prompt(scene, (
            UserMessage("[SPEAKER0] I will read the first line."), AssistantMessage(audio("ref_b")),
            UserMessage("[SPEAKER1] And I will read the second one."), AssistantMessage(audio("ref_c")),
            UserMessage("[SPEAKER0] Good morning.\n[SPEAKER1] Good morning to you, too!"))), True),
        "speakers_in_system": (Prompt(
            SystemMessage(scene=DEFAULT_SCENE, speakers=(Speaker(0, audio=audio("ref_d")),
                                                         Speaker(1, audio=audio("ref_e")))),
            (UserMessage("[SPEAKER0] Are you ready?\n[SPEAKER1] Yes, let us begin."),)), True),
        "multispeaker_descriptions": (Prompt(
            SystemMessage(MULTISPEAKER_SYSTEM_TEXT, DEFAULT_SCENE, (Speaker(0, description="feminine"),
                                                                   Speaker(1, description="masculine"))),
            (UserMessage("[SPEAKER0] Hello there.\n[SPEAKER1] Hi! How are you?"),)), True),
        "plain_text": (Prompt(SystemMessage(), (UserMessage("Hello world, this is a test."),)), False),
        "no_system_two_assistants": (Prompt(None, (
            UserMessage("One, two."), AssistantMessage(audio("ref_f")), AssistantMessage(audio("ref_g")),
            UserMessage("Three, four."))), True),
    }


def test_fixture_covers_the_tested_prompts(index, model):
    """Every prompt of the fixture is tested here (none silently ignored), the goldens come from the original
    0.1.1 code, and the checkpoint was read as the original format with the script's geometry."""
    assert tuple(index["prompts"]) == PROMPT_NAMES
    assert tuple(n for n, c in index["prompts"].items() if "generation" in c) == GENERATED
    assert index["provenance"]["boson_multimodal"] == "0.1.1"
    assert index["provenance"]["transformers"].startswith("4.46.")
    geometry = index["geometry"]
    cfg = model.config
    assert model.checkpoint_format == "original"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim) == tuple(geometry["text_config"][k] for k in (
                "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim"))
    mc = geometry["model_config"]
    assert (cfg.num_codebooks, cfg.codebook_size, cfg.audio_in_token_id, cfg.audio_out_token_id,
            cfg.audio_out_bos_token_id, cfg.audio_eos_token_id) == (
        mc["audio_num_codebooks"], mc["audio_codebook_size"], mc["audio_in_token_idx"], mc["audio_out_token_idx"],
        mc["audio_out_bos_token_id"], mc["audio_eos_token_id"])
    assert model.dtype == torch.float32


@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_prompt_ids_equal_original(name, goldens, tokenizer, model):
    """render_original gives the original's token ids for the same messages: compact (what the original feeds its
    model) and expanded (one position per delayed frame, as the original's forward builds them); the audio-in /
    audio-out positions and the delayed codes placed there equal the original collator's audio_in_ids /
    audio_out_ids."""
    from tokenwave.tts.generate import prompt_inputs
    from tokenwave.tts.prompt import render_original

    prompt, force = typed_prompts(goldens)[name]
    compact = render_original(prompt, tokenizer, force_audio=force)
    want = goldens[f"{name}/input_ids"]
    assert compact.input_ids.tolist() == want.tolist(), (
        f"{name}: first difference at {_first_diff(compact.input_ids, want)}: ours "
        f"{tokenizer.decode(compact.input_ids.tolist())!r}")
    assert compact.ends_with_audio_start == force

    expanded = render_original(prompt, tokenizer, force_audio=force, expand=True)
    assert torch.equal(expanded.input_ids, goldens[f"{name}/expanded_ids"])
    inputs = prompt_inputs(expanded, model)
    mask_in = torch.zeros_like(inputs.audio_mask)
    mask_out = torch.zeros_like(inputs.audio_mask)
    for span in expanded.spans:
        (mask_in if span.kind == "in" else mask_out)[span.start:span.start + span.length] = True
    assert torch.equal(mask_in, goldens[f"{name}/audio_in_mask"])
    assert torch.equal(mask_out, goldens[f"{name}/audio_out_mask"])
    for kind, mask in (("in", mask_in), ("out", mask_out)):
        key = f"{name}/audio_{kind}_ids"
        if key in goldens:
            assert torch.equal(inputs.audio_codes[mask].T, goldens[key]), key
        else:
            assert not mask.any(), key


def test_prompt_builders_give_the_original_layouts(goldens, tokenizer):
    """build_prompt (our port of examples/generation.py's context building) reproduces the original's ids for
    the prompts that script would build: one reference, two references in context, references in the system
    message, several speakers without references, no scene."""
    from tokenwave.tts.prompt import Audio, Reference, build_prompt, render_original

    def ref(transcript, name):
        return Reference(transcript, Audio(codes=goldens[f"codes/{name}"]))

    built = {
        "clone_scene": build_prompt("Birds sang in the morning light.",
                                    voices=[ref("The sun rose over the quiet hills.", "ref_a")]),
        "two_speakers_in_context": build_prompt(
            "[SPEAKER0] Good morning.\n[SPEAKER1] Good morning to you, too!",
            voices=[ref("I will read the first line.", "ref_b"), ref("And I will read the second one.", "ref_c")]),
        "speakers_in_system": build_prompt("[SPEAKER0] Are you ready?\n[SPEAKER1] Yes, let us begin.",
                                           voices=[ref("unused", "ref_d"), ref("unused", "ref_e")],
                                           voices_in_system=True),
        "multispeaker_descriptions": build_prompt("[SPEAKER0] Hello there.\n[SPEAKER1] Hi! How are you?"),
    }
    for name, prompt in built.items():
        got = render_original(prompt, tokenizer, force_audio=True).input_ids
        assert torch.equal(got, goldens[f"{name}/input_ids"]), name
    got = render_original(build_prompt("Hello world, this is a test.", scene=None), tokenizer).input_ids
    assert torch.equal(got, goldens["plain_text/input_ids"])


@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_forward_equals_original(name, goldens, tokenizer, model):
    """One forward pass over the expanded prompt (text ids, delayed audio-in and audio-out codes, DualFFN audio
    path at both) against the original's ``use_cache=False`` forward: final hidden states at every position,
    text logits at the recorded positions, audio logits at every audio-out position, all within 1e-5."""
    from tokenwave.tts.generate import prompt_inputs
    from tokenwave.tts.prompt import render_original

    prompt, force = typed_prompts(goldens)[name]
    inputs = prompt_inputs(render_original(prompt, tokenizer, force_audio=force, expand=True), model)
    hidden = []
    hook = model.model.norm.register_forward_hook(lambda mod, args, out: hidden.append(out))
    try:
        with torch.no_grad():
            out = model(inputs.input_ids[None], inputs.audio_codes[None], inputs.audio_mask[None])
    finally:
        hook.remove()
    want_hidden = goldens[f"{name}/hidden"]
    assert hidden[0][0].shape == want_hidden.shape
    assert (hidden[0][0] - want_hidden).abs().max() <= TOL
    positions = goldens[f"{name}/text_logit_positions"]
    want_text = goldens[f"{name}/text_logits"]
    got_text = out.text_logits[0, positions]
    assert got_text.shape == want_text.shape
    diff = float((got_text - want_text).abs().max())
    assert diff <= TOL, f"{name}: text logits differ by {diff:.3g} (scale {float(want_text.abs().max()):.3g})"
    mask_out = goldens[f"{name}/audio_out_mask"]
    if f"{name}/audio_logits" in goldens:
        want_audio = goldens[f"{name}/audio_logits"]
        got_audio = out.audio_logits[0, mask_out]
        assert got_audio.shape == want_audio.shape
        diff = float((got_audio - want_audio).abs().max())
        assert diff <= TOL, f"{name}: audio logits differ by {diff:.3g}"
    else:
        assert not mask_out.any()


def _stop_ids(tokenizer):
    """The original's stops: stop strings <|end_of_text|>, <|eot_id|> and generation_config.eos_token_id."""
    return (tokenizer.token_id("<|end_of_text|>"), tokenizer.token_id("<|eot_id|>"))


def _check_generation(result, goldens, prefix, name):
    """The text stream and every delayed span of ``result`` equal the recorded ones (``<prefix>/gen_*``)."""
    spans = sorted((k for k in goldens if k.startswith(f"{prefix}/gen_span")),
                   key=lambda k: int(k.rsplit("span", 1)[1]))
    want_text = goldens[f"{prefix}/gen_text_ids"].tolist()
    assert list(result.text_ids) == want_text, f"{name}: text stream {list(result.text_ids)} != original {want_text}"
    assert len(result.spans) == len(spans), name
    for block, key in zip(result.spans, spans):
        want = goldens[key]
        assert block.shape == want.shape, f"{key}: {tuple(block.shape)} frames != original {tuple(want.shape)}"
        assert torch.equal(block, want), f"{key}: first differing frame {_first_diff(block.T, want.T)}"


@pytest.mark.parametrize("name", GENERATED)
def test_greedy_generation_equals_original(name, index, goldens, tokenizer, model):
    """Greedy decoding with RAS off, max 24 steps, going on in text mode after an audio span ends (as the original
    does until a stop token): every delayed frame (all-BOS start, delay ramp, end countdown) and the text stream
    (<|AUDIO_OUT|> per span, <|audio_eos|> at its end, text tokens) equal the original's serve engine
    (StaticCache buckets) or, for references in the system message, HiggsAudioModel.generate (DynamicCache)."""
    from tokenwave.tts.generate import generate, render
    from tokenwave.tts.sampling import SamplingConfig

    prompt, force = typed_prompts(goldens)[name]
    result = generate(model, render(prompt, tokenizer, force_audio=force),
                      sampling=SamplingConfig.serve_engine(temperature=0.0, ras_win_len=0),
                      max_frames=index["prompts"][name]["generation"]["steps"],
                      continue_after_audio=True, stop_token_ids=_stop_ids(tokenizer))
    _check_generation(result, goldens, name, name)


def test_sampled_generation_equals_original(index, goldens, tokenizer, model):
    """Seeded sampling (temperature, top-k, top-p, RAS 7/2) through the serve engine's arguments: the same seed
    gives the original's frames and text stream (same random stream: one generator, the same draws)."""
    from tokenwave.tts.generate import generate, render
    from tokenwave.tts.sampling import SamplingConfig

    run = index["sampled"]
    prompt, _ = typed_prompts(goldens)[run["prompt"]]
    sampling = SamplingConfig.serve_engine(temperature=run["temperature"], top_k=run["top_k"], top_p=run["top_p"],
                                           ras_win_len=run["ras_win_len"],
                                           ras_win_max_num_repeat=run["ras_win_max_num_repeat"])
    result = generate(model, render(prompt, tokenizer, force_audio=True), sampling=sampling,
                      max_frames=run["max_new_tokens"], seed=run["seed"], continue_after_audio=True,
                      stop_token_ids=_stop_ids(tokenizer))
    _check_generation(result, goldens, "sampled", "sampled")


def _first_diff(a: torch.Tensor, b: torch.Tensor):
    n = min(len(a), len(b))
    for i in range(n):
        if not torch.equal(a[i], b[i]):
            return i
    return n if len(a) != len(b) else None
