"""Higgs Audio v2 prompts (tokenwave.tts.prompt) and transcript text (tokenwave.tts.text).

* [T] is checked live against transformers 5.23: ``HiggsAudioV2Processor`` with the converter's chat template
  (``fixtures/tts/hf_chat_template.jinja``, copied from shared/reference/ref_runs/fixtures) and a tiny random
  ``HiggsAudioV2TokenizerModel``, both sides reading the same tokenizer files.
* [O] is checked against the token pieces of spec_generation.md §4.1 (``prepare_chatml_sample`` tokenizes each
  piece separately) and the prompts/lengths logged by ref_runs 05 (serve engine) and 08 (audio in the system
  message).
* Transcript normalisation and chunking: case by case from the rules of [O] ``examples/generation.py``.

Tokenizers: the recipe of shared/reference/ref_runs/synth_tokenizer.py (byte-level alphabet at ids 0..255,
fillers, the 256 real special tokens at their real ids 128000..128255), once exactly as there ("synth", for the
lengths logged by the ref runs) and once with a few BPE merges (``\\n\\n``, `` the``) and a Llama-3-like BOS
post-processor ("merging"), so that piecewise and whole-string tokenization differ and a stray BOS shows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURES, randomize_, tiny_config, transformers_config
from tokenwave.api import CheckpointError
from tokenwave.tts.prompt import (
    DEFAULT_SCENE,
    MULTISPEAKER_SYSTEM_TEXT,
    SPECIAL_TOKENS,
    AssistantMessage,
    Audio,
    Prompt,
    PromptError,
    Reference,
    Speaker,
    SystemMessage,
    UserMessage,
    build_context,
    build_prompt,
    continue_prompt,
    render_original,
    render_transformers,
    to_transformers_conversation,
)
from tokenwave.tts.text import (
    TextTokenizer,
    chunk_transcript,
    normalize_transcript,
    speaker_tags,
    split_by_speaker,
    split_by_words,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# Names of the special tokens at 128000.. (higgs_gen_tokenizer_config.json's added_tokens_decoder): these, and
# <|reserved_special_token_N|> elsewhere with N = 0, 1, 2 at 128002, 128003, 128005 and N = id - 128008 after.
_NAMED = {
    128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128004: "<|finetune_right_pad_id|>",
    128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>", 128009: "<|eot_id|>",
    128010: "<|python_tag|>", 128011: "<|audio_bos|>", 128012: "<|audio_eos|>", 128013: "<|audio_out_bos|>",
    128015: "<|AUDIO|>", 128016: "<|AUDIO_OUT|>", 128017: "<|recipient|>", 128018: "<|scene_desc_start|>",
    128019: "<|scene_desc_end|>", 128020: "<|generation_instruction_start|>",
    128021: "<|generation_instruction_end|>", 128022: "<SE>", 128023: "</SE>", 128024: "<SE_s>",
    128025: "</SE_s>", 128026: "<SE_e>", 128027: "</SE_e>",
}
_RESERVED_LOW = {128002: 0, 128003: 1, 128005: 2}
_MERGES = [("Ċ", "Ċ"), ("Ġ", "t"), ("h", "e"), ("Ġt", "he")]  # byte-level "\n\n", " t", "he", " the"


def _special_name(i: int) -> str:
    return _NAMED.get(i) or f"<|reserved_special_token_{_RESERVED_LOW.get(i, i - 128008)}|>"


def _write_tokenizer(folder, *, merging: bool):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = _MERGES if merging else []
    for i, (a, b) in enumerate(merges):
        vocab[a + b] = 256 + i
    for i in range(len(vocab), 128000):
        vocab[f"<filler_{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(_special_name(i), special=True, normalized=False)
                            for i in range(128000, 128256)])
    if merging:
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 128000)])
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": "<|end_of_text|>",
              "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 131072}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return _write_tokenizer(tmp_path_factory.mktemp("tok") / "synth", merging=False)


@pytest.fixture(scope="module")
def merging_dir(tmp_path_factory):
    return _write_tokenizer(tmp_path_factory.mktemp("tok") / "merging", merging=True)


@pytest.fixture(scope="module")
def synth(synth_dir):
    return TextTokenizer.from_folder(synth_dir)


@pytest.fixture(scope="module")
def tok(merging_dir):
    return TextTokenizer.from_folder(merging_dir)


@pytest.fixture(scope="module")
def processor(merging_dir):
    """transformers' processor on the same tokenizer files, with a tiny random audio tokenizer."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    audio_tokenizer = randomize_(transformers.HiggsAudioV2TokenizerModel(transformers_config(tiny_config())), 3)
    feature_extractor = transformers.DacFeatureExtractor(
        feature_size=1, hop_length=1, padding_side="right", padding_value=0.0, sampling_rate=24000,
        return_attention_mask=True)
    template = (FIXTURES / "tts" / "hf_chat_template.jinja").read_text()
    return transformers.HiggsAudioV2Processor(
        feature_extractor=feature_extractor, tokenizer=transformers.AutoTokenizer.from_pretrained(merging_dir),
        audio_tokenizer=audio_tokenizer.eval(), chat_template=template)


def _codes(frames: int, seed: int, codebooks: int = 8) -> torch.Tensor:
    return torch.randint(0, 1024, (codebooks, frames), generator=torch.Generator().manual_seed(seed))


def _round8(n: int) -> int:
    return -(-n // 8) * 8


def _pieces_ids(tokenizer: TextTokenizer, pieces: list[str]) -> list[int]:
    return [i for piece in pieces for i in tokenizer.encode(piece)]


# ------------------------------------------------------------------------------------------------ tokenizer

def test_special_tokens_have_the_published_ids(tok):
    for name, token_id in SPECIAL_TOKENS.items():
        assert tok.token_id(name) == token_id, name
    assert (tok.bos_token_id, tok.eos_token_id) == (128000, 128001)
    assert tok.vocab_size == 128256
    assert tok.encode("<|eot_id|>a") == [128009, tok.encode("a")[0]]  # no BOS from the post-processor
    assert tok.decode(tok.encode("<SE>[Laughter]</SE> the end")) == "<SE>[Laughter]</SE> the end"


def test_tokenizer_folder_errors(tmp_path, tok):
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        TextTokenizer.from_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable tokenizers file"):
        TextTokenizer.from_folder(tmp_path)
    with pytest.raises(KeyError, match="is not in the text tokenizer"):
        tok.token_id("<|nope|>")


# ------------------------------------------------------------------------------------------- [T], live

def _scene_audio_prompts() -> dict[str, Prompt]:
    a, b = Audio(source="a.wav"), Audio(source="b.wav")
    return {
        "cloning in context": build_prompt("Say this.", voices=[Reference("Reference transcript.", a)]),
        "two voices in context": build_prompt("[SPEAKER0] Hi.\n[SPEAKER1] Hello.",
                                              voices=[Reference("One.", a), Reference("Two.", b)]),
        "voices in system": build_prompt("[SPEAKER0] Hi. [SPEAKER1] Hello.", voices=[
            Reference("x", a), Reference("y", b)], voices_in_system=True),
        "voices in system, no scene": build_prompt("[SPEAKER0] Hi.", voices=[Reference("x", a)], scene=None,
                                                   voices_in_system=True),
        "description and audio voices": build_prompt("[SPEAKER1] Yo.", voices=["warm low voice",
                                                                                 Reference("y", b)]),
        "audio then description, no scene": build_prompt("[SPEAKER0] Yo.", voices=[Reference("y", b), "bright"],
                                                         scene=None),
        "descriptions": build_prompt("[SPEAKER0] Hi.\n[SPEAKER1] Hello."),
        "descriptions, no scene": build_prompt("[SPEAKER0] Hi.\n[SPEAKER1] Hello.", scene=None),
        "plain": build_prompt("  Hello there.  ", scene=None),
        "two assistant turns, padded texts": Prompt(SystemMessage(" Be calm. ", scene=" A hall. "), (
            UserMessage("\n one "), AssistantMessage(a), AssistantMessage(b), UserMessage("two\n"))),
    }


@pytest.mark.parametrize("name", list(_scene_audio_prompts()))
@pytest.mark.parametrize("generation", [True, False])
def test_transformers_text_matches_chat_template(processor, tok, name, generation):
    prompt = _scene_audio_prompts()[name]
    want = processor.apply_chat_template(to_transformers_conversation(prompt), tokenize=False,
                                         add_generation_prompt=generation)
    got = render_transformers(prompt, tok, add_generation_prompt=generation, expand=False)
    assert got.text == want
    assert got.input_ids.tolist() == processor.tokenizer(want, add_special_tokens=False).input_ids
    assert got.ends_with_audio_start == generation


def test_transformers_rendered_examples_of_the_spec(tok):
    """The two prompts rendered by ref run 04 (spec §4.2), character for character."""
    single = build_prompt("Say this.", voices=[Reference("Reference transcript.", Audio(source="ref.wav"))])
    assert render_transformers(single, tok, expand=False).text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nGenerate audio following instruction.\n\n"
        "<|scene_desc_start|>\nAudio is recorded from a quiet room.\n<|scene_desc_end|><|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nReference transcript.<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\n<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|><|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\nSay this.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>")
    multi = build_prompt("[SPEAKER0] Hi. [SPEAKER1] Hello.", voices=[
        Reference("x", Audio(source="a.wav")), Reference("y", Audio(source="b.wav"))], voices_in_system=True)
    assert render_transformers(multi, tok, expand=False).text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nGenerate audio following instruction.\n\n"
        "<|scene_desc_start|>\nAudio is recorded from a quiet room.\n\nSPEAKER0: <|audio_out_bos|><|AUDIO_OUT|>"
        "<|audio_eos|>\nSPEAKER1: <|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>\n<|scene_desc_end|><|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n[SPEAKER0] Hi. [SPEAKER1] Hello.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>")


def _encode_like_processor(processor, wave: np.ndarray) -> torch.Tensor:
    """[K, T] codes of ``wave`` through the processor's own feature extractor and audio tokenizer."""
    inputs = processor.feature_extractor(wave, sampling_rate=24000, return_tensors="pt")
    inputs.pop("padding_mask", None)
    with torch.inference_mode():
        return processor.audio_tokenizer.encode(**inputs).audio_codes[0]


def test_transformers_ids_and_spans_match_the_processor(processor, tok):
    """Scene audio, in-context references and a kept chunk, expanded to one position per delayed frame."""
    rng = np.random.default_rng(0)
    waves = {name: (0.1 * rng.standard_normal(n)).astype(np.float32)
             for name, n in [("a", 2900), ("b", 4800), ("c", 7100), ("d", 3840)]}
    audio = {name: Audio(_encode_like_processor(processor, w), source=name) for name, w in waves.items()}
    base = build_context("[SPEAKER0] x [SPEAKER1] y", voices=[Reference("x", audio["a"]),
                                                               Reference("y", audio["b"])], voices_in_system=True)
    prompt = continue_prompt(base, [("[SPEAKER1] First.", audio["c"]), ("[SPEAKER0] Second.", audio["d"])],
                             "[SPEAKER1] Third.")
    conversation = to_transformers_conversation(prompt, lambda a: {"type": "audio", "audio": waves[a.source]})
    want = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt",
                                         add_generation_prompt=True)
    got = render_transformers(prompt, tok)
    assert torch.equal(got.input_ids, want["input_ids"][0])
    assert torch.equal(got.audio_mask(), torch.isin(got.input_ids, torch.tensor([128016, 128014])))
    frames = want["audio_input_ids"][0]  # [F_total, K], the spans' delayed frames one after the other
    assert sum(span.length for span in got.spans) == frames.shape[0]
    offset = 0
    for span, name in zip(got.spans, "abcd"):
        assert span.audio is audio[name] and span.kind == "out"
        block = frames[offset:offset + span.length]
        assert torch.equal(processor.revert_delay_pattern(block)[1:-1].T, audio[name].codes)
        assert got.input_ids[span.start - 1] == 128013 and got.input_ids[span.start + span.length] == 128012
        offset += span.length
    assert [span.turn for span in got.spans] == [None, None, 1, 3]


def test_transformers_lengths_of_ref_run_04(synth):
    """Run 04: the single-reference prompt with a 1.3 s reference (T = 33) is 211 ids, 35 + 7 audio positions."""
    prompt = build_prompt("Say this.", voices=[Reference("Reference transcript.", Audio(_codes(33, 1)))])
    got = render_transformers(prompt, synth)
    assert got.input_ids.shape == (211,)
    assert [(s.length, int((got.input_ids == 128016).sum()), int((got.input_ids == 128014).sum()))
            for s in got.spans] == [(42, 35, 7)]


# ------------------------------------------------------------------------------------------------ [O]

def test_original_serve_engine_prompt_of_ref_run_05(synth, tok):
    prompt = build_prompt("Say this.", voices=[Reference("Reference transcript.", Audio(_codes(33, 1)))])
    logged = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nGenerate audio following "
              "instruction.\n\n<|scene_desc_start|>\nAudio is recorded from a quiet room.\n<|scene_desc_end|>"
              "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nReference transcript.<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>"
              "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nSay this.<|eot_id|>")
    assert render_original(prompt, synth, add_generation_prompt=False).text == logged
    forced = render_original(prompt, synth, force_audio=True)
    assert forced.input_ids.shape == (170,)  # run 05: collated input_ids (1, 170)
    assert forced.ends_with_audio_start
    assert synth.decode(forced.input_ids[-8:].tolist()).endswith("tant<|end_header_id|>\n\n<|audio_out_bos|>")
    free = render_original(prompt, synth)
    assert not free.ends_with_audio_start
    assert synth.decode(free.input_ids[-8:].tolist()) == "stant<|end_header_id|>\n\n"
    expanded = render_original(prompt, synth, force_audio=True, expand=True)
    # run 05's forward: expanded_input_ids (1, 216) = these 211 positions padded to a multiple of 8 (the model's
    # merge rounds when use_cache=False, spec §9 #3), 42 audio-out positions; the same 211 as [T] in run 04
    assert expanded.input_ids.shape == (211,) and _round8(211) == 216
    assert int(expanded.audio_mask().sum()) == 42
    # piecewise tokenization (spec §4.1), with the merging tokenizer
    pieces = ["<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n",
              "Generate audio following instruction.\n\n<|scene_desc_start|>\nAudio is recorded from a quiet room."
              "\n<|scene_desc_end|>", "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\n",
              "Reference transcript.", "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n",
              "<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>", "<|eot_id|>",
              "<|start_header_id|>user<|end_header_id|>\n\n", "Say this.", "<|eot_id|>",
              "<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>"]
    got = render_original(prompt, tok, force_audio=True)
    assert got.input_ids.tolist() == _pieces_ids(tok, pieces)
    (span,) = got.spans
    assert (span.kind, span.length, span.turn, int(got.input_ids[span.start])) == ("out", 1, 1, 128016)


def test_original_audio_in_system_message_of_ref_run_08(synth, tok):
    codes = _codes(5, 2)
    prompt = build_prompt("[SPEAKER0] Hello.", voices=[Reference("x", Audio(codes))], voices_in_system=True)
    got = render_original(prompt, synth)
    assert got.text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nGenerate audio following instruction.\n\n"
        "<|scene_desc_start|>\nAudio is recorded from a quiet room.\n\nSPEAKER0: <|audio_bos|><|AUDIO|>"
        "<|audio_eos|>\n<|scene_desc_end|><|eot_id|><|start_header_id|>user<|end_header_id|>\n\n[SPEAKER0] "
        "Hello.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    expanded = render_original(prompt, synth, expand=True)
    # run 08: audio_in_ids (8, 14), expanded length 160 (rounded up to a multiple of 8 by the model's merge)
    assert expanded.input_ids.shape[0] == got.input_ids.shape[0] + 13 and _round8(expanded.input_ids.shape[0]) == 160
    (span,) = expanded.spans
    assert (span.kind, span.length, span.turn) == ("in", 14, None)
    assert torch.equal(expanded.audio_mask(), expanded.input_ids == 128015)
    pieces = ["<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n",
              "Generate audio following instruction.\n\n<|scene_desc_start|>\nAudio is recorded from a quiet room."
              "\n\nSPEAKER0: ", "<|audio_bos|><|AUDIO|><|audio_eos|>", "\n<|scene_desc_end|>", "<|eot_id|>",
              "<|start_header_id|>user<|end_header_id|>\n\n", "[SPEAKER0] Hello.", "<|eot_id|>",
              "<|start_header_id|>assistant<|end_header_id|>\n\n"]
    assert render_original(prompt, tok).input_ids.tolist() == _pieces_ids(tok, pieces)


def test_original_multispeaker_system_and_eom(tok):
    """Spec §4.1 multi-speaker system text; <|eom_id|> between consecutive assistant turns ([T]: <|eot_id|>)."""
    prompt = build_prompt("[SPEAKER0] Hi.\n[SPEAKER1] Hello.")
    system = render_original(prompt, tok).text.split("<|eot_id|>")[0]
    assert system == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + MULTISPEAKER_SYSTEM_TEXT
                      + "\n\n<|scene_desc_start|>\n" + DEFAULT_SCENE
                      + "\n\nSPEAKER0: feminine\nSPEAKER1: masculine\n<|scene_desc_end|>")
    two = Prompt(None, (UserMessage("a"), AssistantMessage(Audio(_codes(2, 0))), AssistantMessage(Audio(
        _codes(3, 1))), UserMessage("b")))
    ids = render_original(two, tok).input_ids.tolist()
    assert ids[:2] == [128000, 128006] and tok.decode(ids).count("<|eom_id|>") == 1
    assert "<|audio_eos|><|eom_id|><|start_header_id|>assistant" in tok.decode(ids)
    with pytest.raises(PromptError, match="requires a system message"):
        render_transformers(two, tok)


def test_original_and_transformers_differ_where_the_references_do(tok):
    """Same text for a prompt without audio-in and with trimmed texts, but [O] tokenizes piecewise (the header's
    "\\n\\n" is one merged id there) while [T] tokenizes the whole string."""
    prompt = build_prompt("Speak the words.")
    original = render_original(prompt, tok, force_audio=True)
    transformers = render_transformers(prompt, tok)
    assert original.text == transformers.text
    assert original.input_ids.tolist() != transformers.input_ids.tolist()
    assert transformers.input_ids.tolist() == tok.encode(transformers.text)
    assert tok.decode(original.input_ids.tolist()) == tok.decode(transformers.input_ids.tolist())
    padded = Prompt(SystemMessage(), (UserMessage("  Speak.\n"),))
    assert "\n\n  Speak.\n<|eot_id|>" in render_original(padded, tok).text
    assert "\n\nSpeak.<|eot_id|>" in render_transformers(padded, tok).text


# ----------------------------------------------------------------------------------- building, validation

def test_build_prompt_layouts():
    ref = Reference("Ref words.", Audio(source="r.wav"))
    no_scene = build_prompt("Hi.", voices=[ref], scene=None)
    assert no_scene.system is None and [type(t) for t in no_scene.turns] == [UserMessage, AssistantMessage,
                                                                               UserMessage]
    assert no_scene.turns[0].text == "Ref words."
    two = build_prompt("[SPEAKER1] a [SPEAKER0] b", voices=[ref, Reference("Other.", Audio(source="o.wav"))])
    assert [t.text for t in two.turns if isinstance(t, UserMessage)] == ["[SPEAKER0] Ref words.",
                                                                           "[SPEAKER1] Other.", two.turns[-1].text]
    assert two.declared_speakers() == {0, 1}
    profile = build_prompt("Hi.", voices=["deep voice"])  # a description forces the system placement
    assert profile.system.speakers == (Speaker(0, description="deep voice"),) and len(profile.turns) == 1
    tagged = build_prompt("[SPEAKER10] a\n[SPEAKER2] b")  # [O] sorts tag strings: SPEAKER10 < SPEAKER2
    assert [(s.index, s.description) for s in tagged.system.speakers] == [(10, "feminine"), (2, "masculine")]
    custom = build_prompt("[SPEAKER0] a [SPEAKER1] b", speaker_descriptions={0: "old man", 1: "child"})
    assert [s.description for s in custom.system.speakers] == ["old man", "child"]
    single = build_prompt("[SPEAKER0] a")
    assert single.system == SystemMessage(scene=DEFAULT_SCENE) and single.system.speakers == ()


def test_continue_prompt_keeps_the_last_chunks():
    base = build_context("whole text", voices=[Reference("Ref.", Audio(source="r.wav"))])
    done = [(f"chunk {i}", Audio(source=f"{i}.wav")) for i in range(4)]
    full = continue_prompt(base, done, "next")
    assert len(full.turns) == 2 + 8 + 1 and full.turns[-1] == UserMessage("next")
    kept = continue_prompt(base, done, "next", buffer_size=2)
    assert [t.text for t in kept.turns if isinstance(t, UserMessage)] == ["Ref.", "chunk 2", "chunk 3", "next"]
    assert [t.audio.source for t in kept.turns if isinstance(t, AssistantMessage)] == ["r.wav", "2.wav", "3.wav"]
    assert len(continue_prompt(base, done, "next", buffer_size=0).turns) == 3


@pytest.mark.parametrize("make, message", [
    (lambda: UserMessage(""), "user message: empty text"),
    (lambda: UserMessage("  \n"), "user message: empty text"),
    (lambda: UserMessage("hi<|eot_id|>"), "control token <\\|eot_id\\|>"),
    (lambda: UserMessage("[SPEAKER one] hi"), "malformed speaker tag"),
    (lambda: SystemMessage(scene=""), "scene description: empty text"),
    (lambda: SystemMessage(speakers=[Speaker(1, "a"), Speaker(1, "b")]), "SPEAKER1 is declared twice"),
    (lambda: Speaker(0), "exactly one of description and audio"),
    (lambda: Speaker(0, "x", Audio(source="a")), "exactly one of description and audio"),
    (lambda: Speaker(-1, "x"), "speaker index"),
    (lambda: Audio(), "codes or a source"),
    (lambda: Audio(torch.zeros(8, 3)), "must be integers"),
    (lambda: Audio(torch.zeros(8, dtype=torch.long)), r"\[codebooks, frames\]"),
    (lambda: Audio(torch.full((8, 2), 1024)), r"\[0, 1024\)"),
    (lambda: Prompt(None, ()), "empty prompt"),
    (lambda: Prompt(SystemMessage(speakers=[Speaker(0, "a"), Speaker(1, "b")]), (UserMessage("[SPEAKER2] x"),)),
     r"turn 0 \(user\): unknown speaker \[SPEAKER2\]; declared: SPEAKER0, SPEAKER1"),
    (lambda: Prompt(None, (UserMessage("[SPEAKER0] r"), AssistantMessage(Audio(source="r")),
                           UserMessage("[SPEAKER0] a [SPEAKER3] b"))),
     r"turn 2 \(user\): unknown speaker \[SPEAKER3\]"),
    (lambda: build_prompt("[SPEAKER2] x", voices=[Reference("a", Audio(source="a")), Reference("b", Audio(
        source="b"))]), r"unknown speaker \[SPEAKER2\]: 2 voice\(s\) give SPEAKER0..SPEAKER1"),
    (lambda: build_prompt("[SPEAKER0] a [SPEAKER1] b", speaker_descriptions={0: "x"}), "no description for SPEAKER1"),
    (lambda: build_prompt("[SPEAKER0] a", speaker_descriptions={0: "x", 4: "y"}), "unknown speaker SPEAKER4"),
    (lambda: Reference(" ", Audio(source="a")), "reference transcript: empty text"),
])
def test_invalid_prompts_are_named(make, message):
    with pytest.raises(PromptError, match=message):
        make()


def test_render_errors(tok):
    placeholder = build_prompt("Hi.", voices=[Reference("Ref.", Audio(source="ref.wav"))])
    assert render_transformers(placeholder, tok, expand=False).spans[0].audio.source == "ref.wav"
    with pytest.raises(PromptError, match=r"audio span 0 \(turn 1, source 'ref.wav'\) has no codes"):
        render_transformers(placeholder, tok)
    with pytest.raises(PromptError, match="has no codes"):
        render_original(placeholder, tok, expand=True)
    mixed = Prompt(SystemMessage(), (UserMessage("a"), AssistantMessage(Audio(_codes(2, 0))), UserMessage("b"),
                                     AssistantMessage(Audio(_codes(2, 0, codebooks=4)))))
    for render in (render_transformers, lambda p, t: render_original(p, t, expand=True)):
        with pytest.raises(PromptError, match=r"audio span 1 \(turn 3\) has 4 codebooks, span 0 has 8"):
            render(mixed, tok)


# -------------------------------------------------------------------------------------------- transcripts

@pytest.mark.parametrize("raw, want", [
    ("Hello（world）。", "Hello world ."),  # full-width parentheses -> ASCII -> spaces, then collapsed
    ("你好，世界", "你好, 世界."),  # full-width comma -> ", "; no final punctuation -> "."
    ("“引用”、《书》…", '"引用",<书>...'),
    ("It is 75°F, or 24°C", "It is 75 degrees Fahrenheit, or 24 degrees Celsius."),
    ("[laugh] ok!", "<SE>[Laughter]</SE> ok!"),
    ("[humming start] la la [humming end]", "<SE>[Humming]</SE> la la <SE_e>[Humming]</SE_e>"),
    ("[music start] tune [music end] then [music]", "<SE_s>[Music]</SE_s> tune <SE_e>[Music]</SE_e> then "
                                                    "<SE>[Music]</SE>"),
    ("[sing start] la [sing end] [applause] [cheering] [cough]",
     "<SE_s>[Singing]</SE_s> la <SE_e>[Singing]</SE_e> <SE>[Applause]</SE> <SE>[Cheering]</SE> <SE>[Cough]</SE>"),
    ("【laugh】", "<SE>[Laughter]</SE>"),  # full-width brackets are converted before the tags
    ("[Laugh] no", "[Laugh] no."),  # tags are case-sensitive
    ("  a \t  b \n\n \n  c  ", "a b\nc."),
    ("[SPEAKER0] hi\n[SPEAKER1] yo", "[SPEAKER0] hi\n[SPEAKER1] yo."),
    ("wait:", "wait:."),
    ("He said 'hi'", "He said 'hi'"),
    ("", "."),
])
def test_normalize_transcript(raw, want):
    assert normalize_transcript(raw) == want


def test_speaker_tags():
    assert speaker_tags("[SPEAKER1] a [SPEAKER0] b [SPEAKER1] c") == [0, 1]
    assert speaker_tags("[SPEAKER10] a [SPEAKER2] b") == [10, 2]
    assert speaker_tags("no tags [SPEAKER] [speaker0]") == []


def test_split_by_speaker():
    text = "intro\n[SPEAKER0] a\ncontinued\n[SPEAKER1] b\n\n[SPEAKER0] c"
    assert split_by_speaker(text) == ["intro", "[SPEAKER0] a\ncontinued", "[SPEAKER1] b", "[SPEAKER0] c"]
    assert split_by_speaker(text, max_turns=3) == ["intro\n[SPEAKER0] a\ncontinued\n[SPEAKER1] b", "[SPEAKER0] c"]
    assert chunk_transcript(text, "speaker", max_turns=2) == split_by_speaker(text, max_turns=2)


def test_split_by_words():
    assert split_by_words("a b c d e", max_words=2) == ["a b", "c d", "e\n\n"]
    assert split_by_words("a b c\n\nd e\n\n\n\nf", max_words=2) == ["a b", "c\n\n", "d e\n\n", "f\n\n"]
    assert split_by_words("你好世界。再见", max_words=3) == ["你好世", "界。再", "见\n\n"]
    words = " ".join(f"w{i}" for i in range(450))
    chunks = chunk_transcript(words, "word")
    assert [len(c.split()) for c in chunks] == [200, 200, 50]
    assert "".join(c.strip() + " " for c in chunks).strip() == words
    assert chunk_transcript("whole text") == ["whole text"]
    with pytest.raises(ValueError, match="unknown chunk method"):
        chunk_transcript("x", "sentence")
    with pytest.raises(ValueError, match="max_words"):
        split_by_words("x", max_words=0)
