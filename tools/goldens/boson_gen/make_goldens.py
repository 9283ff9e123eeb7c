"""Golden files from the ORIGINAL Higgs Audio v2 generation model (boson-multimodal 0.1.1), tiny geometry.

Run through ``make_goldens.sh`` (it builds the venv and the import path); running this file directly needs
PYTHONPATH = tests/stubs : tools/goldens/boson/stubs : <wheel>/boson_multimodal/audio_processing/
descriptaudiocodec : <wheel> and a venv with torch 2.13.0 + transformers 4.46.3 (+ loguru, dacite, pandas).

What it does
------------
1. Text tokenizer: a small synthetic byte-level BPE (the real Llama-3 tokenizer cannot be downloaded and is
   too large for a fixture): ids 0..255 = the byte alphabet, then ``NUM_MERGES`` merges learned here by a
   deterministic BPE on a fixed corpus (so that splitting a prompt into separately tokenized pieces changes
   the ids, as with the real tokenizer), then the 256 special tokens of the published tokenizer with their
   real names and real order (``<|begin_of_text|>`` .. ``<|reserved_special_token_247|>``), i.e. id
   ``128000 + k`` of the real tokenizer is ``SPECIAL_BASE + k`` here. Saved with transformers'
   ``PreTrainedTokenizerFast.save_pretrained`` and read back from the fixture folder by the original code.
2. Model: the original ``HiggsAudioConfig`` / ``HiggsAudioModel`` with a tiny Llama text config (the published
   flags: ``dual_ffn_fast_forward`` with every layer a DualFFN layer, delay pattern on, audio-in codes encoded,
   no audio tower, llama3 RoPE with the published scaling), vocabulary = the tokenizer above, 8 codebooks of
   ``CODEBOOK_SIZE`` codes (+ stream BOS/EOS), fp32. Every parameter is overwritten from a seeded generator
   (scales chosen so that hidden states and logits are O(1), not the 0.02-init near-zero values), then
   ``save_pretrained`` writes the original format (config.json, generation_config.json, model.safetensors).
3. The original ``HiggsAudioServeEngine`` is built by its own ``__init__`` from the fixture folder
   (``HiggsAudioModel.from_pretrained``, ``AutoTokenizer.from_pretrained``, StaticCache buckets, collator),
   on CPU in fp32. Two stand-ins: ``load_higgs_audio_tokenizer`` returns a codes table (``encode`` of a
   reference name returns the seeded codes stored in the goldens; ``decode`` returns silence of the right
   length) and ``librosa.load`` returns the reference name. Codec parity is covered by
   tests/fixtures/higgs_boson_tiny; here the generation model gets codes directly.
4. Prompts (``PROMPTS``): ChatML samples built from the original's data types, turned into model inputs by
   the original's own code: the serve engine's ``_prepare_inputs`` (``prepare_chatml_sample`` + generation
   prompt + collator with ``return_audio_in_tokens=False``), or, for reference audio in the system message,
   the path of the repository's ``examples/generation.py`` (not in the wheel; its 20 lines are reproduced in
   :func:`examples_inputs`: ``_build_system_message_with_audio_prompt``, ``prepare_chatml_sample``, the
   assistant header, ``ChatMLDatasetSample`` and the collator with ``return_audio_in_tokens=True``).
5. Goldens: the compact prompt ids; one forward pass of the original model (``use_cache=False``) with the
   audio-in / audio-out codes: expanded ids, audio masks, the delayed codes, the final hidden states (output
   of the shared final RMSNorm, which both heads read) at every position, text logits at a subset of
   positions (every 32nd, both sides of each audio span boundary, the last two: all of them would make the
   fixture too large), audio logits at every audio-out position; greedy generation with RAS off
   (``HiggsAudioServeEngine.generate`` with ``temperature=0, ras_win_len=0``, or ``HiggsAudioModel.generate``
   with a DynamicCache as ``examples/generation.py`` calls it), recording every delayed frame and text token;
   one seeded sampled generation with RAS on through the serve engine.
"""

import argparse
import collections
import functools
import hashlib
import json
import os
import platform
from dataclasses import asdict

import boson_multimodal.serve.serve_engine as se
import numpy as np
import tokenizers
import torch
import transformers
from boson_multimodal.data_types import AudioContent, ChatMLSample, Message, TextContent
from boson_multimodal.dataset.chatml_dataset import ChatMLDatasetSample, prepare_chatml_sample
from boson_multimodal.model.higgs_audio import HiggsAudioConfig, HiggsAudioModel
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

BOSON_VERSION = "0.1.1"

# ---------------------------------------------------------------------------------------------------------
# Tiny geometry (fixed: tokenwave's tests depend on it)
# ---------------------------------------------------------------------------------------------------------
NUM_MERGES = 128
SPECIAL_BASE = 256 + NUM_MERGES  # id of <|begin_of_text|> (128000 in the real tokenizer)
VOCAB_SIZE = SPECIAL_BASE + 256
NUM_CODEBOOKS = 8
CODEBOOK_SIZE = 30  # codes 0..29, stream BOS 30, stream EOS 31 (published: 1024, 1024, 1025)


def real_to_tiny(real_id):
    """Id of a special token of the published tokenizer (128000..128255) in the tiny tokenizer."""
    assert 128000 <= real_id < 128256, real_id
    return real_id - 128000 + SPECIAL_BASE


TEXT_CONFIG = collections.OrderedDict(
    model_type="llama",
    vocab_size=VOCAB_SIZE,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,  # 4 heads x 8 = 32 != hidden 16: q/o projections are not square
    hidden_act="silu",
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    max_position_embeddings=131072,
    rope_scaling=dict(rope_type="llama3", factor=32.0, high_freq_factor=4.0, low_freq_factor=1.0,
                      original_max_position_embeddings=8192),
    bos_token_id=real_to_tiny(128000),
    eos_token_id=real_to_tiny(128001),
    tie_word_embeddings=True,  # as published; irrelevant (the text head is audio_decoder_proj.text_lm_head)
)
MODEL_CONFIG = collections.OrderedDict(
    audio_adapter_type="dual_ffn_fast_forward",
    audio_dual_ffn_layers=[0, 1],
    audio_ffn_hidden_size=16,
    audio_ffn_intermediate_size=32,
    audio_num_codebooks=NUM_CODEBOOKS,
    audio_codebook_size=CODEBOOK_SIZE,
    audio_stream_bos_id=CODEBOOK_SIZE,
    audio_stream_eos_id=CODEBOOK_SIZE + 1,
    use_delay_pattern=True,
    skip_audio_tower=True,
    encode_whisper_embed=False,
    encode_audio_in_tokens=True,
    audio_decoder_proj_num_layers=0,
    use_audio_out_self_attention=0,
    use_audio_out_embed_projector=False,
    audio_embed_avg=False,
    pad_token_id=real_to_tiny(128001),
    audio_in_token_idx=real_to_tiny(128015),
    audio_out_token_idx=real_to_tiny(128016),
    audio_out_bos_token_id=real_to_tiny(128013),
    audio_eos_token_id=real_to_tiny(128012),
)
KV_CACHE_LENGTHS = [128, 1024]  # serve-engine StaticCache buckets: long prompts promote to 1024 while generating
OUTPUT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "goldens.safetensors", "goldens.json", "README.md")

SEED_WEIGHTS = 20240601
SEED_CODES = 7
WEIGHT_SCALES = collections.OrderedDict(
    embed_tokens="N(0, 1)",
    audio_codebook_embeddings="N(0, 1/8) (a frame embedding is the sum of 8 rows: std ~1)",
    linear="N(0, 1/fan_in) (q/k/v/o, gate/up/down of both MLPs)",
    rmsnorm="1 + 0.1 N(0, 1)",
    heads="N(0, 4/hidden) (text_lm_head, audio_lm_head: logits std ~2)",
)

# ---------------------------------------------------------------------------------------------------------
# Synthetic tokenizer
# ---------------------------------------------------------------------------------------------------------
# Names of the published tokenizer's 256 special tokens (tokenizer_config.json added_tokens_decoder); every id
# not listed is <|reserved_special_token_N|> with N = 0, 1, 2 for 128002, 128003, 128005, else id - 128008.
NAMED_SPECIALS = {
    128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128004: "<|finetune_right_pad_id|>",
    128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>", 128009: "<|eot_id|>",
    128010: "<|python_tag|>", 128011: "<|audio_bos|>", 128012: "<|audio_eos|>", 128013: "<|audio_out_bos|>",
    128015: "<|AUDIO|>", 128016: "<|AUDIO_OUT|>", 128017: "<|recipient|>", 128018: "<|scene_desc_start|>",
    128019: "<|scene_desc_end|>", 128020: "<|generation_instruction_start|>",
    128021: "<|generation_instruction_end|>", 128022: "<SE>", 128023: "</SE>", 128024: "<SE_s>",
    128025: "</SE_s>", 128026: "<SE_e>", 128027: "</SE_e>",
}


def special_names():
    out = []
    for real in range(128000, 128256):
        if real in NAMED_SPECIALS:
            out.append(NAMED_SPECIALS[real])
        else:
            n = {128002: 0, 128003: 1, 128005: 2}.get(real, real - 128008)
            out.append(f"<|reserved_special_token_{n}|>")
    assert len(set(out)) == 256 and out[14] == "<|reserved_special_token_6|>" and out[-1].endswith("_247|>")
    return out


# The merges are learned on this fixed text (English sentences like the prompts', and the prompt formats).
MERGE_CORPUS = """Generate audio following instruction.
Audio is recorded from a quiet room.
You are an AI assistant designed to convert text into speech.
If the user's message includes a [SPEAKER*] tag, do not read out the tag and generate speech for the following
text, using the specified voice. If no speaker tag is present, select a suitable voice on your own.
SPEAKER0: feminine
SPEAKER1: masculine
[SPEAKER0] [SPEAKER1] The sun rose over the quiet hills, and the birds sang in the morning light.
We will read the lines together, one after the other, and then we will rest for a while.
assistant user system
"""


def learn_merges(corpus, num_merges):
    """Deterministic byte-level BPE: repeatedly merge the most frequent adjacent pair (ties: the smallest pair
    in string order) inside the ByteLevel pre-tokens of ``corpus``."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    words = collections.Counter(piece for piece, _ in pre.pre_tokenize_str(corpus))
    split = {w: list(w) for w in words}
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for w, n in words.items():
            parts = split[w]
            for a, b in zip(parts, parts[1:]):
                pairs[(a, b)] += n
        assert pairs, "corpus too small for the number of merges"
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w in words:
            parts, out, i = split[w], [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            split[w] = out
    return merges


def build_tokenizer(out):
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges = learn_merges(MERGE_CORPUS, NUM_MERGES)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    assert len(vocab) <= SPECIAL_BASE
    for i in range(len(vocab), SPECIAL_BASE):  # only if some merges produced an existing token
        vocab[f"<filler_{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    names = special_names()
    tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
    for k, n in enumerate(names):
        assert tok.token_to_id(n) == SPECIAL_BASE + k, n
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   clean_up_tokenization_spaces=True, model_max_length=131072)
    fast.save_pretrained(out)
    back = AutoTokenizer.from_pretrained(out)
    assert type(back) is PreTrainedTokenizerFast and len(back) == VOCAB_SIZE
    return back, merges


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------
def build_config():
    cfg = HiggsAudioConfig(text_config=dict(TEXT_CONFIG), **MODEL_CONFIG)
    cfg.torch_dtype = torch.float32
    return cfg


def randomize(model):
    g = torch.Generator().manual_seed(SEED_WEIGHTS)
    hidden = TEXT_CONFIG["hidden_size"]
    rules = collections.Counter()
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name == "embed_tokens.weight":
                p.copy_(n)
                rules["embed_tokens"] += 1
            elif name == "audio_codebook_embeddings.weight":
                p.copy_(n / NUM_CODEBOOKS ** 0.5)
                rules["audio_codebook_embeddings"] += 1
            elif name.endswith("layernorm.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.1 * n)
                rules["rmsnorm"] += 1
            elif name.startswith("audio_decoder_proj.") and name.endswith("lm_head.weight"):
                p.copy_(n * 2.0 / hidden ** 0.5)
                rules["heads"] += 1
            elif name.endswith("_proj.weight") and p.dim() == 2:
                p.copy_(n / p.shape[1] ** 0.5)
                rules["linear"] += 1
            else:
                raise AssertionError(f"no rule for {name}")
    return dict(rules)


def build_model(out):
    torch.manual_seed(0)
    model = HiggsAudioModel(build_config()).eval()
    rules = randomize(model)
    model.save_pretrained(out, safe_serialization=True)
    return model, rules


# ---------------------------------------------------------------------------------------------------------
# Reference codes and the audio-tokenizer stand-in
# ---------------------------------------------------------------------------------------------------------
REF_FRAMES = collections.OrderedDict(ref_a=6, ref_b=5, ref_c=4, ref_d=5, ref_e=3, ref_f=4, ref_g=2)


def make_codes():
    g = torch.Generator().manual_seed(SEED_CODES)
    return collections.OrderedDict(
        (name, torch.randint(0, CODEBOOK_SIZE, (NUM_CODEBOOKS, t), generator=g)) for name, t in REF_FRAMES.items())


class CodesAudioTokenizer:
    """Stands in for the original HiggsAudioTokenizer inside the serve engine: ``encode`` of a reference name
    gives its codes ``[K, T]`` (what the real ``encode`` returns for one waveform), ``decode`` silence."""

    tps = 25
    sampling_rate = 24000

    def __init__(self, codes):
        self.codes = codes
        self.encoded = []

    def encode(self, audio, sr=None):
        self.encoded.append(audio)
        return self.codes[audio].clone()

    def decode(self, vq_code):
        return np.zeros((1, 1, 960 * vq_code.shape[-1]), dtype=np.float32)


class AudioLookup:
    """Stands in for librosa inside the serve engine: ``load(url)`` gives the url back as the "waveform"."""

    @staticmethod
    def load(path, sr=None, **kwargs):
        return path, sr


# ---------------------------------------------------------------------------------------------------------
# Prompts, as the original's ChatML messages
# ---------------------------------------------------------------------------------------------------------
SYSTEM_SCENE = ("Generate audio following instruction.\n\n<|scene_desc_start|>\nAudio is recorded from a quiet room."
                "\n<|scene_desc_end|>")
MULTISPEAKER_SYSTEM = (
    "You are an AI assistant designed to convert text into speech.\n"
    "If the user's message includes a [SPEAKER*] tag, do not read out the tag and generate speech for the "
    "following text, using the specified voice.\n"
    "If no speaker tag is present, select a suitable voice on your own."
    "\n\n<|scene_desc_start|>\nAudio is recorded from a quiet room.\n\nSPEAKER0: feminine\nSPEAKER1: masculine"
    "\n<|scene_desc_end|>")
# examples/generation.py: --ref_audio_in_system_message with two speakers and a scene
AUDIO_PLACEHOLDER_TOKEN = "<|__AUDIO_PLACEHOLDER__|>"
SYSTEM_WITH_AUDIO = ("Generate audio following instruction.\n\n<|scene_desc_start|>\nAudio is recorded from a quiet "
                     f"room.\n\nSPEAKER0: {AUDIO_PLACEHOLDER_TOKEN}\nSPEAKER1: {AUDIO_PLACEHOLDER_TOKEN}"
                     "\n<|scene_desc_end|>")

GEN_STEPS = 24
# name -> messages (role, content; content items: str or ("audio", ref name)), path, force_audio_gen, generation
PROMPTS = collections.OrderedDict(
    clone_scene=dict(
        path="serve", force_audio_gen=True, generate=True,
        messages=[("system", SYSTEM_SCENE), ("user", "The sun rose over the quiet hills."),
                  ("assistant", ("audio", "ref_a")), ("user", "Birds sang in the morning light.")]),
    two_speakers_in_context=dict(
        path="serve", force_audio_gen=True, generate=True,
        messages=[("system", SYSTEM_SCENE), ("user", "[SPEAKER0] I will read the first line."),
                  ("assistant", ("audio", "ref_b")), ("user", "[SPEAKER1] And I will read the second one."),
                  ("assistant", ("audio", "ref_c")),
                  ("user", "[SPEAKER0] Good morning.\n[SPEAKER1] Good morning to you, too!")]),
    speakers_in_system=dict(
        path="examples", force_audio_gen=True, generate=True,
        messages=[("system_with_audio", ["ref_d", "ref_e"]),
                  ("user", "[SPEAKER0] Are you ready?\n[SPEAKER1] Yes, let us begin.")]),
    multispeaker_descriptions=dict(
        path="serve", force_audio_gen=True, generate=False,
        messages=[("system", MULTISPEAKER_SYSTEM), ("user", "[SPEAKER0] Hello there.\n[SPEAKER1] Hi! How are you?")]),
    plain_text=dict(
        path="serve", force_audio_gen=False, generate=True,
        messages=[("system", "Generate audio following instruction."), ("user", "Hello world, this is a test.")]),
    no_system_two_assistants=dict(
        path="serve", force_audio_gen=True, generate=True,
        messages=[("user", "One, two."), ("assistant", ("audio", "ref_f")), ("assistant", ("audio", "ref_g")),
                  ("user", "Three, four.")]),
)
SAMPLED = dict(prompt="clone_scene", temperature=0.7, top_k=20, top_p=0.95, ras_win_len=7, ras_win_max_num_repeat=2,
               seed=123, max_new_tokens=GEN_STEPS)


def _build_system_message_with_audio_prompt(system_message):
    """examples/generation.py, verbatim logic (the function is not part of the wheel)."""
    contents = []
    while AUDIO_PLACEHOLDER_TOKEN in system_message:
        loc = system_message.find(AUDIO_PLACEHOLDER_TOKEN)
        contents.append(TextContent(system_message[:loc]))
        contents.append(AudioContent(audio_url=""))
        system_message = system_message[loc + len(AUDIO_PLACEHOLDER_TOKEN):]
    if len(system_message) > 0:
        contents.append(TextContent(system_message))
    return Message(role="system", content=contents)


def chatml(spec):
    """The ChatMLSample and the reference names in the order of the audio contents."""
    messages, refs = [], []
    for role, content in spec["messages"]:
        if role == "system_with_audio":
            messages.append(_build_system_message_with_audio_prompt(SYSTEM_WITH_AUDIO))
            refs += content
        elif isinstance(content, tuple):
            messages.append(Message(role=role, content=AudioContent(audio_url=content[1])))
            refs.append(content[1])
        else:
            messages.append(Message(role=role, content=content))
    return ChatMLSample(messages=messages), refs


def messages_json(sample):
    out = []
    for m in sample.messages:
        items = m.content if isinstance(m.content, list) else [m.content]
        out.append({"role": m.role, "content": [
            {"type": "text", "text": c} if isinstance(c, str) else asdict(c) for c in items]})
    return out


def examples_inputs(eng, sample, refs, codes, force_audio_gen):
    """The model inputs of examples/generation.py (HiggsAudioModelClient.generate, one chunk), with the serve
    engine's ``force_audio_gen`` postfix optional."""
    tok = eng.tokenizer
    input_tokens, _, audio_contents, _ = prepare_chatml_sample(sample, tok)
    postfix = "<|start_header_id|>assistant<|end_header_id|>\n\n" + ("<|audio_out_bos|>" if force_audio_gen else "")
    input_tokens.extend(tok.encode(postfix, add_special_tokens=False))
    assert len(audio_contents) == len(refs)
    context_audio_ids = [codes[r] for r in refs]
    cfg = eng.model.config
    collator = se.HiggsAudioSampleCollator(
        whisper_processor=None, audio_in_token_id=cfg.audio_in_token_idx, audio_out_token_id=cfg.audio_out_token_idx,
        audio_stream_bos_id=cfg.audio_stream_bos_id, audio_stream_eos_id=cfg.audio_stream_eos_id,
        encode_whisper_embed=cfg.encode_whisper_embed, pad_token_id=cfg.pad_token_id,
        return_audio_in_tokens=cfg.encode_audio_in_tokens, use_delay_pattern=cfg.use_delay_pattern, round_to=1,
        audio_num_codebooks=cfg.audio_num_codebooks)
    curr_sample = ChatMLDatasetSample(
        input_ids=torch.LongTensor(input_tokens), label_ids=None,
        audio_ids_concat=torch.concat([ele.cpu() for ele in context_audio_ids], dim=1),
        audio_ids_start=torch.cumsum(torch.tensor([0] + [ele.shape[1] for ele in context_audio_ids],
                                                  dtype=torch.long), dim=0),
        audio_waveforms_concat=None, audio_waveforms_start=None, audio_sample_rate=None, audio_speaker_indices=None)
    batch = asdict(collator([curr_sample]))
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------------------
# Recording generation
# ---------------------------------------------------------------------------------------------------------
class GenerateRecorder:
    """Wraps ``model.generate`` (instance attribute) to keep its raw outputs, and hooks the model's forward to
    keep, per step, the smallest top-1/top-2 gap of the logits that chose the step's ids (greedy robustness)."""

    def __init__(self, model):
        self.model = model
        self.inner = model.generate
        self.calls = []
        self.gaps = []
        model.generate = self
        model.register_forward_hook(self._hook)

    def __call__(self, *args, **kwargs):
        self.gaps = []
        out = self.inner(*args, **kwargs)
        self.calls.append(out)
        return out

    def _hook(self, module, args, output):
        if output.audio_logits is not None and output.audio_logits.shape[0] > 0:
            top = output.audio_logits[-1].float().topk(2, dim=-1).values
            self.gaps.append(("audio", float((top[:, 0] - top[:, 1]).min())))
        top = output.logits[0, -1].float().topk(2).values
        self.gaps.append(("text", float(top[0] - top[1])))


TEXT_LOGITS_STRIDE = 32


def text_logit_positions(audio_mask):
    """Positions whose full text logits are stored: every TEXT_LOGITS_STRIDE-th one, the position on each side
    of each boundary of an audio span, the last two positions."""
    n = int(audio_mask.shape[0])
    chosen = set(range(0, n, TEXT_LOGITS_STRIDE)) | {n - 2, n - 1}
    m = audio_mask.long().tolist()
    for p in range(1, n):
        if m[p] != m[p - 1]:  # boundary between p - 1 and p
            chosen |= {p - 1, p}
    return torch.tensor(sorted(p for p in chosen if 0 <= p < n), dtype=torch.long)


def _keep_output(store, module, args, output):
    store.append(output.detach().clone())


def err_str(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


# ---------------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    stray = sorted(set(os.listdir(out)) - set(OUTPUT_FILES))
    if stray:
        raise SystemExit(f"{out} holds files this script does not write: {stray}")
    for name in os.listdir(out):  # idempotent: the folder holds exactly what this script writes
        os.remove(os.path.join(out, name))

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    _, merges = build_tokenizer(out)
    model, rules = build_model(out)
    codes = make_codes()

    # ---------------- the serve engine, built by its own constructor from the fixture folder ----------------
    audio_tok = CodesAudioTokenizer(codes)
    se.load_higgs_audio_tokenizer = lambda name, device="cuda": audio_tok
    se.librosa = AudioLookup
    eng = se.HiggsAudioServeEngine(out, "codes-stand-in", device="cpu", torch_dtype=torch.float32,
                                   kv_cache_lengths=KV_CACHE_LENGTHS)
    tok = eng.tokenizer
    assert eng.model.dtype == torch.float32
    loaded = eng.model.state_dict()
    for k, v in model.state_dict().items():  # from_pretrained read back exactly what was saved
        assert torch.equal(loaded[k], v), k
    attn_impl = eng.model.config._attn_implementation
    gen_cfg = eng.model.generation_config
    recorder = GenerateRecorder(eng.model)

    tensors = collections.OrderedDict()
    index = collections.OrderedDict()

    def put(key, t, what):
        t = t.detach().cpu().contiguous()
        tensors[key] = t
        index[key] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "what": what}

    for name, c in codes.items():
        put(f"codes/{name}", c, f"reference audio codes [K, T] (seeded, 0..{CODEBOOK_SIZE - 1}), undelayed")

    cases = collections.OrderedDict()
    for name, spec in PROMPTS.items():
        sample, refs = chatml(spec)
        case = collections.OrderedDict(path=spec["path"], force_audio_gen=spec["force_audio_gen"], refs=refs,
                                       messages=messages_json(sample))
        audio_tok.encoded.clear()
        if spec["path"] == "serve":
            inputs = eng._prepare_inputs(sample, force_audio_gen=spec["force_audio_gen"])
            assert audio_tok.encoded == refs, (audio_tok.encoded, refs)
        else:
            inputs = examples_inputs(eng, sample, refs, codes, spec["force_audio_gen"])
        ids = inputs["input_ids"]
        assert ids.shape[0] == 1 and bool(inputs["attention_mask"].all())
        put(f"{name}/input_ids", ids[0], "compact prompt ids the original feeds the model (one placeholder per "
            "audio span), generation prompt included")
        case["prompt_text"] = tok.decode(ids[0])
        case["prompt_length"] = int(ids.shape[1])
        for key in ("audio_in_ids", "audio_out_ids"):
            v = inputs.get(key)
            if v is not None and v.numel():
                put(f"{name}/{key}", v, f"{key} of the collator: delayed codes [K, F] with stream BOS/EOS, all "
                    "spans concatenated")
        captured = []
        hook = eng.model.norm.register_forward_hook(functools.partial(_keep_output, captured))
        with torch.no_grad():
            fw = eng.model(input_ids=ids, attention_mask=inputs["attention_mask"],
                           audio_in_ids=inputs.get("audio_in_ids"), audio_in_ids_start=inputs.get("audio_in_ids_start"),
                           audio_out_ids=inputs.get("audio_out_ids"),
                           audio_out_ids_start=inputs.get("audio_out_ids_start"), use_cache=False, return_dict=True)
        hook.remove()
        assert len(captured) == 1
        keep = fw.attention_mask[0].bool()
        case["forward_left_padding"] = int((~keep).sum())
        assert bool(keep[int((~keep).sum()):].all()), "padding must be on the left only"
        put(f"{name}/expanded_ids", fw.expanded_input_ids[0, keep], "ids after the original's merge (one position "
            "per delayed frame, placeholders repeated), left padding removed")
        put(f"{name}/audio_in_mask", fw.audio_in_discrete_codes_mask[0, keep], "positions holding audio-in codes")
        put(f"{name}/audio_out_mask", fw.audio_out_mask[0, keep], "positions holding audio-out codes")
        put(f"{name}/hidden", captured[0][0, keep].float(), "final hidden states (output of the shared final "
            "RMSNorm, what both heads read) at every prompt position [S, H]")
        positions = text_logit_positions(fw.audio_in_discrete_codes_mask[0, keep] | fw.audio_out_mask[0, keep])
        put(f"{name}/text_logit_positions", positions, f"the positions of text_logits: every {TEXT_LOGITS_STRIDE}th, "
            "the position on each side of every audio span boundary, the last two")
        put(f"{name}/text_logits", fw.logits[0, keep][positions].float(), "text-head logits [P, V] at "
            "text_logit_positions (all positions would make the fixture too large)")
        if fw.audio_logits is not None and fw.audio_logits.shape[0]:
            put(f"{name}/audio_logits", fw.audio_logits.float(), "audio-head logits at the audio-out positions "
                "[N_out, K, C+2], in position order")
        case["expanded_length"] = int(keep.sum())
        case["text_logits_absmax"] = float(fw.logits[0, keep].abs().max())

        if spec["generate"]:
            gen = collections.OrderedDict(steps=GEN_STEPS, sampling="greedy, RAS off")
            if spec["path"] == "serve":
                gen["call"] = (f"HiggsAudioServeEngine.generate(max_new_tokens={GEN_STEPS}, temperature=0.0, "
                               f"top_k=None, top_p=0.95, force_audio_gen={spec['force_audio_gen']}, ras_win_len=0, "
                               "seed=None)")
                try:
                    resp = eng.generate(sample, max_new_tokens=GEN_STEPS, temperature=0.0, top_k=None, top_p=0.95,
                                        force_audio_gen=spec["force_audio_gen"], ras_win_len=0, seed=None)
                    gen["response"] = {"generated_text": resp.generated_text, "usage": resp.usage,
                                       "audio_samples": None if resp.audio is None else int(resp.audio.shape[0])}
                except IndexError as e:  # the engine reads outputs[1][0] even when no audio span was generated
                    gen["response"] = {"error": err_str(e)}
                gen["kv_bucket_at_end"] = eng.model.current_past_key_values_bucket
            else:
                gen["call"] = (f"HiggsAudioModel.generate(**batch, max_new_tokens={GEN_STEPS}, use_cache=True, "
                               "do_sample=False, past_key_values_buckets=None (DynamicCache), ras_win_len=None, "
                               "stop_strings=['<|end_of_text|>', '<|eot_id|>'], tokenizer=tokenizer, seed=None)")
                eng.model.generate(**inputs, max_new_tokens=GEN_STEPS, use_cache=True, do_sample=False,
                                   past_key_values_buckets=None, ras_win_len=None, ras_win_max_num_repeat=2,
                                   stop_strings=["<|end_of_text|>", "<|eot_id|>"], tokenizer=tok, seed=None)
            seq, spans = recorder.calls[-1]
            new_text = seq[0, ids.shape[1]:]
            put(f"{name}/gen_text_ids", new_text, "generated text stream of the original (input_ids after the "
                "prompt: <|AUDIO_OUT|> once per span, <|audio_eos|> at a span's end, text tokens)")
            for s, block in enumerate(spans):
                put(f"{name}/gen_span{s}", block, f"generated audio span {s}: delayed frames [K, N] from the all-BOS "
                    "frame (outputs[1] of HiggsAudioModel.generate)")
            gen["text_ids"] = new_text.tolist()
            gen["text"] = tok.decode(new_text)
            gen["spans"] = [int(b.shape[1]) for b in spans]
            gaps = [g for _, g in recorder.gaps]
            gen["min_top2_gap"] = min(gaps) if gaps else None
            case["generation"] = gen
        cases[name] = case

    # ---------------- one seeded sampled generation with RAS ----------------
    sample, _ = chatml(PROMPTS[SAMPLED["prompt"]])
    resp = eng.generate(sample, max_new_tokens=SAMPLED["max_new_tokens"], temperature=SAMPLED["temperature"],
                        top_k=SAMPLED["top_k"], top_p=SAMPLED["top_p"], force_audio_gen=True,
                        ras_win_len=SAMPLED["ras_win_len"], ras_win_max_num_repeat=SAMPLED["ras_win_max_num_repeat"],
                        seed=SAMPLED["seed"])
    seq, spans = recorder.calls[-1]
    prompt_len = int(tensors[f"{SAMPLED['prompt']}/input_ids"].shape[0])
    put("sampled/gen_text_ids", seq[0, prompt_len:], "sampled run: generated text stream")
    for s, block in enumerate(spans):
        put(f"sampled/gen_span{s}", block, f"sampled run: generated audio span {s} (delayed)")
    sampled = collections.OrderedDict(SAMPLED)
    sampled["call"] = ("HiggsAudioServeEngine.generate(max_new_tokens={max_new_tokens}, temperature={temperature}, "
                       "top_k={top_k}, top_p={top_p}, force_audio_gen=True, ras_win_len={ras_win_len}, "
                       "ras_win_max_num_repeat={ras_win_max_num_repeat}, seed={seed})").format(**SAMPLED)
    sampled["spans"] = [int(b.shape[1]) for b in spans]
    sampled["text_ids"] = seq[0, prompt_len:].tolist()
    sampled["generated_text"] = resp.generated_text

    # ---------------- write the goldens ----------------
    for t in tensors.values():
        assert t.dtype in (torch.float32, torch.int64, torch.bool), t.dtype
    meta = {"format": "tokenwave golden tensors from boson-multimodal 0.1.1 (see goldens.json)"}
    save_file(dict(tensors), os.path.join(out, "goldens.safetensors"), metadata=meta)

    for name in ("model.safetensors", "goldens.safetensors"):
        os.chmod(os.path.join(out, name), 0o644)
    files = sorted(os.listdir(out))
    assert set(files) <= set(OUTPUT_FILES), files
    prov = collections.OrderedDict(
        generator="tools/goldens/boson_gen/make_goldens.sh (runs tools/goldens/boson_gen/make_goldens.py)",
        boson_multimodal=BOSON_VERSION,
        boson_wheel=os.environ.get("BOSON_WHEEL_NAME"),
        boson_wheel_sha256=os.environ.get("BOSON_WHEEL_SHA256"),
        torch=torch.__version__,
        transformers=transformers.__version__,
        tokenizers=tokenizers.__version__,
        numpy=np.__version__,
        python=platform.python_version(),
        torch_threads=torch.get_num_threads(),
        attn_implementation=attn_impl,
        generation_config={"bos_token_id": gen_cfg.bos_token_id, "eos_token_id": gen_cfg.eos_token_id,
                           "pad_token_id": gen_cfg.pad_token_id},
        kv_cache_lengths=KV_CACHE_LENGTHS,
        seeds={"weights": SEED_WEIGHTS, "codes": SEED_CODES, "construction": 0},
        weight_scales=WEIGHT_SCALES,
        weight_rules=rules,
        model_safetensors_sha256=hashlib.sha256(open(os.path.join(out, "model.safetensors"), "rb").read()).hexdigest(),
        num_parameters=int(sum(p.numel() for p in model.parameters())),
    )
    goldens = collections.OrderedDict(
        provenance=prov,
        geometry={"text_config": TEXT_CONFIG, "model_config": MODEL_CONFIG},
        tokenizer={"vocab_size": VOCAB_SIZE, "byte_alphabet": "0..255", "merges": f"256..{SPECIAL_BASE - 1}",
                   "specials": f"{SPECIAL_BASE}..{VOCAB_SIZE - 1} (real id 128000 + k -> {SPECIAL_BASE} + k)",
                   "num_merges": len(merges), "merge_corpus": MERGE_CORPUS},
        notes=[
            "ids: *_input_ids are compact (one <|AUDIO|>/<|AUDIO_OUT|> per span); *_expanded_ids have one position "
            "per delayed frame (T + K + 1 per span) as built inside the original forward.",
            "forward: HiggsAudioModel(input_ids, attention_mask, audio_in_ids, audio_in_ids_start, audio_out_ids, "
            "audio_out_ids_start, use_cache=False): the original left-pads to a multiple of 8; padding removed.",
            "generation: every step is one frame or one text token; gen_text_ids is the original's text stream "
            "after the prompt; gen_span<s> are the delayed audio spans (outputs[1]).",
            "min_top2_gap: smallest gap between the two best logits over the decisions of a greedy run (ids are "
            "robust to fp differences far below it).",
        ],
        prompts=cases,
        sampled=sampled,
        files=files + ["goldens.json", "README.md"],
        tensors=index,
    )
    with open(os.path.join(out, "goldens.json"), "w") as f:
        json.dump(goldens, f, indent=1)
        f.write("\n")
    write_readme(out, prov, cases, sampled)

    for name, c in cases.items():
        g = c.get("generation", {})
        print(name, "len", c["prompt_length"], "expanded", c["expanded_length"], "pad", c["forward_left_padding"],
              "gen spans", g.get("spans"), "text", json.dumps(g.get("text")), "gap", g.get("min_top2_gap"),
              "resp", json.dumps(g.get("response")))
    print("sampled spans", sampled["spans"], json.dumps(sampled["generated_text"]))
    print("attn", attn_impl, "params", prov["num_parameters"], "sizes",
          {n: os.path.getsize(os.path.join(out, n)) for n in sorted(os.listdir(out))})


def write_readme(out, prov, cases, sampled):
    audio_eos = MODEL_CONFIG["audio_eos_token_id"]
    rows = []
    for name, c in cases.items():
        g = c.get("generation")
        if g is None:
            gen = "-"
        else:
            ended = audio_eos in g["text_ids"]
            after = len(g["text_ids"]) - g["text_ids"].index(audio_eos) - 1 if ended else 0
            gen = (f"span of {g['spans'][0]} frames, " + (f"ended (`<|audio_eos|>`), then {after} text tokens"
                                                          if ended else "not ended")
                   if g["spans"] else f"no audio span: {len(g['text_ids'])} text tokens")
            if "error" in g.get("response", {}):
                gen += f"; `HiggsAudioServeEngine.generate` then raises `{g['response']['error']}`"
        rows.append(f"| {name} | {c['path']} | {c['force_audio_gen']} | {c['prompt_length']} | "
                    f"{c['expanded_length']} | {gen} |")
    sizes = {n: os.path.getsize(os.path.join(out, n)) for n in sorted(os.listdir(out)) if n != "README.md"}
    text = f"""# higgs_gen_boson_tiny — goldens from the original Higgs Audio v2 generation model

Generated data, do not edit by hand. Regenerate (bit-identical) with

```bash
bash tools/goldens/boson_gen/make_goldens.sh     # venv: ${{BOSON_GEN_VENV:-/tmp/tokenwave-boson-gen-venv}}
```

## Provenance

* Code under test: the ORIGINAL `HiggsAudioModel`, `HiggsAudioServeEngine`, `prepare_chatml_sample` and
  `HiggsAudioSampleCollator` from PyPI `boson-multimodal=={prov["boson_multimodal"]}` (`{prov["boson_wheel"]}`,
  sha256 `{prov["boson_wheel_sha256"]}`), downloaded with `pip download --no-deps` and imported in place; no
  method of it is patched. The serve engine is built by its own `__init__` from this folder.
* Environment: python {prov["python"]}, torch {prov["torch"]}, transformers {prov["transformers"]} (inside the
  original's pin `transformers>=4.45.1,<4.47`), tokenizers {prov["tokenizers"]}; CPU, fp32, 1 thread,
  `torch.use_deterministic_algorithms(True)`, attention `{prov["attn_implementation"]}`.
* Stand-ins: the serve engine's `load_higgs_audio_tokenizer` returns a table of seeded codes (its `encode`
  of a reference name returns that reference's codes, `decode` returns silence) and its `librosa.load`
  returns the reference name; `tests/stubs/torchaudio` and `tools/goldens/boson/stubs` satisfy module-level
  imports of the codec code (never called here). `examples/generation.py` (not in the wheel) is reproduced
  for prompts with reference audio in the system message (`make_goldens.py: examples_inputs`).
* Text tokenizer: synthetic byte-level BPE (ids 0..255 bytes, {NUM_MERGES} merges learned deterministically
  on a fixed corpus, then the published tokenizer's 256 special tokens with their real names, in order, from
  id {SPECIAL_BASE}: real id 128000 + k is {SPECIAL_BASE} + k here). Ordinary text tokenizes differently from
  Llama-3, control tokens keep their names and relative order.
* Weights: random, seeded (generator seed {SEED_WEIGHTS}), every parameter overwritten:
{chr(10).join(f"  * {k}: {v}" for k, v in WEIGHT_SCALES.items())}
* Reference codes: `torch.randint(0, {CODEBOOK_SIZE}, (8, T))`, generator seed {SEED_CODES}.

## Tiny geometry

* Llama text config: vocab {VOCAB_SIZE}, hidden {TEXT_CONFIG["hidden_size"]}, intermediate \
{TEXT_CONFIG["intermediate_size"]}, {TEXT_CONFIG["num_hidden_layers"]} layers, \
{TEXT_CONFIG["num_attention_heads"]} query heads / {TEXT_CONFIG["num_key_value_heads"]} KV heads, head_dim \
{TEXT_CONFIG["head_dim"]}, RMSNorm eps 1e-5, RoPE theta 500000 with the published llama3 scaling (32, 1, 4, 8192).
* Audio: `dual_ffn_fast_forward` with every layer a DualFFN layer, {NUM_CODEBOOKS} codebooks x {CODEBOOK_SIZE} codes \
(stream BOS {CODEBOOK_SIZE}, EOS {CODEBOOK_SIZE + 1}), delay pattern, audio-in codes encoded, no audio tower, untied \
text head; {prov["num_parameters"]} parameters.
* Token ids: pad/eos {MODEL_CONFIG["pad_token_id"]}, `<|AUDIO|>` {MODEL_CONFIG["audio_in_token_idx"]}, `<|AUDIO_OUT|>` \
{MODEL_CONFIG["audio_out_token_idx"]}, `<|audio_out_bos|>` {MODEL_CONFIG["audio_out_bos_token_id"]}, `<|audio_eos|>` \
{MODEL_CONFIG["audio_eos_token_id"]}.

## Prompts

`serve`: `HiggsAudioServeEngine._prepare_inputs` (+ `generate`); `examples`: the inputs of
`examples/generation.py` (collator with `return_audio_in_tokens=True`; generation with
`HiggsAudioModel.generate` and a DynamicCache). Messages of every prompt are in `goldens.json`.

| prompt | path | force_audio_gen | compact ids | positions | greedy generation (RAS off) |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Every generation runs {GEN_STEPS} steps (`max_new_tokens`; a step is one frame or one text token) unless a stop token
comes first. Sampled run: `{sampled["call"]}` on `{sampled["prompt"]}`: spans of {sampled["spans"]} frames.

Per prompt `<name>/`: `input_ids` (compact), `expanded_ids`, `audio_in_mask`, `audio_out_mask`, `audio_in_ids` /
`audio_out_ids` (delayed codes as the collator gives them), `hidden` (final RMSNorm output at every position),
`text_logits` at `text_logit_positions` (every {TEXT_LOGITS_STRIDE}th position, both sides of each audio span
boundary, the last two; all positions would make the fixture too large), `audio_logits` (every audio-out position),
and for generated prompts `gen_text_ids` + `gen_span<s>`; `codes/<ref>` are the reference codes.

## Files

{chr(10).join(f"* `{n}` ({b} bytes)" for n, b in sizes.items())}
* `README.md` (this file)

config.json, generation_config.json and model.safetensors are the original `save_pretrained` output
(model_type `higgs_audio`); tokenizer.json, tokenizer_config.json and special_tokens_map.json are transformers'
`PreTrainedTokenizerFast.save_pretrained` output; goldens.json indexes every tensor of goldens.safetensors.

## License

`boson-multimodal` is Apache-2.0. This folder contains no code and no published weights: it is generated data
(random weights, synthetic tokenizer, and the original code's outputs on them).
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
