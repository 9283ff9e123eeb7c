"""Golden files from the ORIGINAL Higgs Audio v2 tokenizer (boson-multimodal 0.1.1), tiny geometry.

Run through ``make_goldens.sh`` (it builds the venv and the import path); running this file directly needs
PYTHONPATH = tests/stubs : tools/goldens/boson/stubs : <wheel>/boson_multimodal/audio_processing/
descriptaudiocodec : <wheel> and a venv with torch 2.13.0 + transformers 4.46.3.

What it does
------------
1. Builds the original ``HiggsAudioTokenizer`` with the published config.json values except ``D=8`` and
   ``codebook_dim=4``.  ``AutoModel.from_pretrained("bosonai/hubert_base", trust_remote_code=True)`` cannot
   be downloaded, so ``higgs_audio_tokenizer.AutoModel`` is replaced by a factory returning a randomly
   initialised tiny transformers-4.46 ``HubertModel``.
2. The original hard-codes the DAC encoder width (64), decoder width (1024) and semantic widths (768).
   Those submodules are replaced after construction by instances of the SAME original classes
   (``dac2.Encoder``, ``dac2.Decoder``, ``semantic_module.Encoder/Decoder``, ``ResidualVectorQuantizer``,
   ``nn.Linear``) at tiny widths, and ``semantic_dim`` / ``encoder_semantic_dim`` / ``quantizer_dim`` are set
   to what the constructor would have computed for those widths.  No method of the original is patched:
   ``_xcodec_encode``, ``get_regress_target``, ``decode`` and every submodule ``forward`` run unmodified.
3. Deterministically overwrites every floating parameter (seeded), sets the codebooks (``inited=1`` so the
   original does not run k-means at inference), and writes model.pth / config.json / goldens.* / README.md.
"""

import argparse
import collections
import hashlib
import io
import json
import math
import os
import platform
import traceback

import boson_multimodal.audio_processing.higgs_audio_tokenizer as hat
import numpy as np
import torch
import torch.nn as nn
import transformers
from safetensors.torch import save_file
from transformers import HubertConfig, HubertModel

BOSON_VERSION = "0.1.1"

# ---------------------------------------------------------------------------------------------------------
# Tiny geometry (fixed: tokenwave's tests depend on it)
# ---------------------------------------------------------------------------------------------------------
HUBERT = collections.OrderedDict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    conv_dim=[8] * 7,
    conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    conv_stride=[5, 2, 2, 2, 2, 2, 2],
    conv_bias=False,
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    layer_norm_eps=1e-5,
    mask_time_prob=0.0,
)
# The stand-in teacher is built with HubertConfig's default mask_time_prob (0.05) instead of 0.0, only so
# that it owns `masked_spec_embed` like the published model.pth does (`semantic_model.masked_spec_embed`).
# SpecAugment masking is applied in training mode only, so eval outputs are identical either way.
STANDIN_MASK_TIME_PROB = 0.05

ENC_WIDTH = 4  # original hard-codes 64
DEC_WIDTH = 32  # original hard-codes 1024
CONFIG = collections.OrderedDict(
    n_filters=32,
    D=8,
    codebook_dim=4,
    target_bandwidths=[0.5, 1, 1.5, 2, 4],
    ratios=[8, 5, 4, 2, 3],
    sample_rate=24000,
    bins=1024,
    n_q=8,
    semantic_techer="hubert_base_general",
)
GEOMETRY = collections.OrderedDict(
    acoustic_encoder_hidden_size=ENC_WIDTH,
    acoustic_decoder_hidden_size=DEC_WIDTH,
    semantic_model_config=HUBERT,
)

LENGTHS = [200, 961, 24000, 30000, 88800]
BANDWIDTHS = [None, 0.5, 1, 1.5, 2]
BATCH_LENGTHS = [24000, 30000]  # 24000: no padding branch; 30000: padding branch (expected to fail for B=2)
INTERMEDIATE_LENGTH = 30000
LOWBW_DECODE = (24000, 0.5)

# Fixed gains applied after the random initialisation so that, on 0.1*N(0,1) input, the acoustic latent
# and the semantic encoding are both O(1) (untouched they are ~0.05 and ~0.2) and the 4-d projections fed
# to the N(0,1) codebooks vary across frames by more than the codebook spacing (otherwise almost every
# frame gets the same code and the goldens would test little).
CALIBRATION = collections.OrderedDict(
    acoustic_encoder_last_conv_gain=50.0,  # encoder.block[-1] (Conv D_enc->D): weight_g and bias
    semantic_encoder_last_conv_gain=6.0,  # encoder_semantic.conv_blocks[-1].conv.conv: weight and bias
    quantizer_project_in_gain=3.0,  # quantizer.vq.layers[q].project_in: weight and bias
)

SEED_BUILD = 0
SEED_WEIGHTS = 1
SEED_INPUT_BASE = 1_000_000  # input for length L uses seed SEED_INPUT_BASE + L
SEED_BATCH_SECOND = 2_000_000  # second batch item for length L uses seed SEED_BATCH_SECOND + L

STANDIN_CALLS = []


class _TinyHubertAutoModel:
    """Replaces transformers.AutoModel inside higgs_audio_tokenizer (the remote-code teacher is unavailable)."""

    @staticmethod
    def from_pretrained(name, **kwargs):
        STANDIN_CALLS.append({"name": name, "kwargs": sorted(kwargs)})
        cfg = HubertConfig(**{**HUBERT, "mask_time_prob": STANDIN_MASK_TIME_PROB})
        return HubertModel(cfg)


def _bw_tag(bw):
    return "none" if bw is None else str(bw)


def acoustic_len_formula(n, ratios):
    """DAC encoder output length; None if a strided conv would see fewer samples than its kernel."""
    for s in ratios:
        k, p = 2 * s, math.ceil(s / 2)
        if n + 2 * p < k:
            return None
        n = (n + 2 * p - k) // s + 1
    return n


def semantic_len_formula(n):
    n16 = math.ceil(2 * n / 3) + 320
    for k, s in zip(HUBERT["conv_kernel"], HUBERT["conv_stride"]):
        n16 = (n16 - k) // s + 1
    return -(-n16 // 2) if n16 > 0 else n16


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------
def build_model():
    hat.AutoModel = _TinyHubertAutoModel
    torch.manual_seed(SEED_BUILD)
    m = hat.HiggsAudioTokenizer(**CONFIG, device="cpu")
    keys_published_layout = list(m.state_dict().keys())

    D, sem = CONFIG["D"], HUBERT["hidden_size"]
    # Same classes, same constructor calls as HiggsAudioTokenizer.__init__, tiny widths.
    m.encoder = hat.dac2.Encoder(ENC_WIDTH, CONFIG["ratios"], D)
    m.decoder_2 = hat.dac2.Decoder(D, DEC_WIDTH, CONFIG["ratios"])
    m.semantic_dim = sem
    m.encoder_semantic_dim = sem
    m.quantizer_dim = int((D + m.encoder_semantic_dim) // 1)  # vq_scale = 1
    m.encoder_semantic = hat.Encoder(input_channels=m.semantic_dim, encode_channels=m.encoder_semantic_dim)
    m.decoder_semantic = hat.Decoder(
        code_dim=m.encoder_semantic_dim, output_channels=m.semantic_dim, decode_channels=m.semantic_dim
    )
    m.quantizer = hat.ResidualVectorQuantizer(
        dimension=m.quantizer_dim, codebook_dim=CONFIG["codebook_dim"], n_q=CONFIG["n_q"], bins=CONFIG["bins"]
    )
    m.fc_prior = nn.Linear(D + m.encoder_semantic_dim, m.quantizer_dim)
    m.fc_post1 = nn.Linear(m.quantizer_dim, m.encoder_semantic_dim)
    m.fc_post2 = nn.Linear(m.quantizer_dim, D)

    keys_tiny = list(m.state_dict().keys())
    assert keys_tiny == keys_published_layout, "tiny model must have exactly the original key layout"
    assert m.semantic_downsample_factor == 2 and int(m.hop_length) == 960 and m.frame_rate == 25
    assert type(m.semantic_model) is HubertModel
    return m


def randomize_weights(m):
    """Seeded, deterministic: every floating parameter moves away from its default initialisation."""
    g = torch.Generator().manual_seed(SEED_WEIGHTS)
    norm_params = set()
    for mname, mod in m.named_modules():
        if isinstance(mod, (nn.LayerNorm, nn.GroupNorm)):
            norm_params.update(f"{mname}.{p}" for p, _ in mod.named_parameters(recurse=False))

    def randn(t):
        return torch.randn(t.shape, generator=g, dtype=torch.float32)

    def rand(t, lo, hi):
        return lo + (hi - lo) * torch.rand(t.shape, generator=g, dtype=torch.float32)

    rules = collections.Counter()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(".alpha"):  # Snake
                p.copy_(rand(p, 0.5, 1.5))
                rules["snake_alpha_uniform[0.5,1.5]"] += 1
            elif name in norm_params and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * randn(p))
                rules["norm_weight_1+0.1N"] += 1
            elif name.endswith(".bias"):
                p.copy_(0.05 * randn(p))
                rules["bias_0.05N"] += 1
            elif name.endswith(".weight_g") or name.endswith(".parametrizations.weight.original0"):
                p.mul_(rand(p, 0.5, 1.5))  # g != ||v|| afterwards: weight-norm folding matters
                rules["weightnorm_g_times_uniform[0.5,1.5]"] += 1
            else:  # conv/linear weights, weight_v, pos-conv v, masked_spec_embed
                p.mul_(1.0 + 0.1 * randn(p))
                rules["weight_times_(1+0.1N)"] += 1
        for layer in m.quantizer.vq.layers:
            cb = layer._codebook
            cb.embed.copy_(randn(cb.embed))
            cb.embed_avg.copy_(cb.embed)
            cb.cluster_size.copy_(rand(cb.cluster_size, 1.0, 100.0))  # unused at inference
            cb.inited.fill_(1.0)
            rules["codebook_embed_N(0,1)"] += 1

        last = m.encoder.block[-1]
        last.weight_g.mul_(CALIBRATION["acoustic_encoder_last_conv_gain"])
        last.bias.mul_(CALIBRATION["acoustic_encoder_last_conv_gain"])
        conv = m.encoder_semantic.conv_blocks[-1].conv.conv
        conv.weight.mul_(CALIBRATION["semantic_encoder_last_conv_gain"])
        conv.bias.mul_(CALIBRATION["semantic_encoder_last_conv_gain"])
        for layer in m.quantizer.vq.layers:
            layer.project_in.weight.mul_(CALIBRATION["quantizer_project_in_gain"])
            layer.project_in.bias.mul_(CALIBRATION["quantizer_project_in_gain"])
    return dict(rules)


def check_weight_norm_matters(m):
    """g vs ||v|| per output channel of every weight-normed conv: folding g*v/||v|| must change the weights."""
    rels = []
    per_module_max = []
    for mod in m.modules():
        if hasattr(mod, "weight_g") and hasattr(mod, "weight_v"):
            v = mod.weight_v.detach()
            norm = v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
            rel = ((mod.weight_g.detach() - norm).abs() / norm).flatten()
            rels.append(rel)
            per_module_max.append(float(rel.max()))
    rels = torch.cat(rels)
    stats = {
        "weight_normed_convs": len(per_module_max),
        "channels": int(rels.numel()),
        "min_over_convs_of_max_channel_rel_diff": min(per_module_max),
        "median_channel_rel_diff": float(rels.median()),
        "fraction_channels_rel_diff_above_1e-2": float((rels > 1e-2).float().mean()),
    }
    assert stats["min_over_convs_of_max_channel_rel_diff"] > 1e-2, stats
    return stats


# ---------------------------------------------------------------------------------------------------------
# Goldens
# ---------------------------------------------------------------------------------------------------------
def seeded_noise(seed, shape):
    g = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(shape, generator=g, dtype=torch.float32)).contiguous()


class Capture:
    """Forward hooks (observation only) on the original submodules used by _xcodec_encode."""

    def __init__(self, m):
        self.m = m
        self.handles = []
        self.data = collections.defaultdict(list)

    def __enter__(self):
        def hook(tag, what):
            def fn(mod, args, out):
                self.data[tag].append((args[0] if what == "in" else out).detach().clone())

            return fn

        self.handles.append(self.m.encoder.register_forward_hook(hook("encoder", "out")))
        self.handles.append(self.m.encoder_semantic.register_forward_hook(hook("encoder_semantic", "out")))
        self.handles.append(self.m.fc_prior.register_forward_hook(hook("fc_prior", "out")))
        for q, layer in enumerate(self.m.quantizer.vq.layers):
            self.handles.append(layer.register_forward_hook(hook(f"vq_in_{q}", "in")))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def code_margins(m, cap, codes):
    """Per codebook: smallest gap between the best and the second-best score of the nearest-codeword search
    (recomputed from the hooked residuals with the original's formula; also re-checks the argmax)."""
    n_q = codes.shape[1]
    mins = []
    for q in range(n_q):
        layer = m.quantizer.vq.layers[q]
        r = cap.data[f"vq_in_{q}"][0]
        z = layer.project_in(r.transpose(1, 2)).reshape(-1, layer._codebook.embed.shape[1])
        embed = layer._codebook.embed.t()
        dist = -(z.pow(2).sum(1, keepdim=True) - 2 * z @ embed + embed.pow(2).sum(0, keepdim=True))
        assert torch.equal(dist.max(dim=-1).indices, codes[:, q].reshape(-1))
        top2 = dist.topk(2, dim=-1).values
        mins.append(float((top2[:, 0] - top2[:, 1]).min()))
    return mins


def stack_of(e):
    """Machine-independent call stack of an exception: paths relative to site-packages / the wheel root."""
    frames = []
    for fr in traceback.extract_tb(e.__traceback__):
        fn = fr.filename.replace(os.sep, "/")
        for marker in ("/site-packages/", "/descriptaudiocodec/", "/src/boson_multimodal/"):
            if marker in fn:
                fn = ("boson_multimodal/" if marker == "/src/boson_multimodal/" else "") + fn.split(marker, 1)[1]
                break
        else:
            fn = os.path.basename(fn)
        frames.append(f"{fn}:{fr.lineno} in {fr.name}")
    return frames


def err_str(e):
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    m = build_model()
    standin_calls = list(STANDIN_CALLS)
    rules = randomize_weights(m)
    m.eval()
    wn_rel = check_weight_norm_matters(m)
    attn_impl = m.semantic_model.config._attn_implementation

    tensors = collections.OrderedDict()
    index = collections.OrderedDict()

    def put(key, t, desc):
        t = torch.as_tensor(t).detach().contiguous()
        tensors[key] = t.clone()
        index[key] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "desc": desc}

    cases = []
    for L in LENGTHS:
        x = seeded_noise(SEED_INPUT_BASE + L, (1, 1, L))
        case = collections.OrderedDict(L=L, input_seed=SEED_INPUT_BASE + L, input_key=f"L{L}/x")
        put(f"L{L}/x", x, f"input waveform (1,1,{L}) float32 = 0.1*N(0,1), torch.Generator seed {SEED_INPUT_BASE + L}")
        ta_formula, ts_formula = acoustic_len_formula(L, CONFIG["ratios"]), semantic_len_formula(L)
        case["Ta_formula"] = ta_formula
        case["Ts_formula"] = ts_formula
        case["codes"] = collections.OrderedDict()
        full = None
        for bw in BANDWIDTHS:
            tag = _bw_tag(bw)
            try:
                with torch.no_grad(), Capture(m) as cap:
                    codes = m._xcodec_encode(x, bw).audio_codes
            except Exception as e:  # noqa: BLE001 - recorded as the original's behaviour
                case["codes"][tag] = {"error": err_str(e)}
                case.setdefault("error", err_str(e))
                case.setdefault("error_stack", stack_of(e))
                continue
            assert codes.dtype == torch.int64
            n_q = codes.shape[1]
            key = f"L{L}/codes_bw_{tag}"
            put(key, codes, f"original _xcodec_encode(x, target_bw={bw}).audio_codes, (1,n_q,T) int64")
            enc_calls = [t.shape[-1] for t in cap.data["encoder"]]
            ts = cap.data["encoder_semantic"][0].shape[-1]
            case["codes"][tag] = {
                "key": key,
                "shape": list(codes.shape),
                "n_q": n_q,
                "min_score_gap_per_codebook": code_margins(m, cap, codes),
            }
            if bw is None:
                full = codes
                case["Ta"] = enc_calls[0]
                case["Ts"] = ts
                case["padding_branch"] = len(enc_calls) > 1
                case["Ta_after_pad320"] = enc_calls[1] if len(enc_calls) > 1 else None
                case["trimmed"] = enc_calls[-1] != ts
                case["T"] = codes.shape[-1]
                if L == INTERMEDIATE_LENGTH:
                    put(
                        f"L{L}/acoustic_padded",
                        cap.data["encoder"][-1],
                        "hooked inside _xcodec_encode: encoder(F.pad(x[:,0,:],(320,320)).unsqueeze(0)) (1,D,T)"
                        if case["padding_branch"]
                        else "hooked inside _xcodec_encode: encoder(x)",
                    )
                    put(
                        f"L{L}/semantic_encoded",
                        cap.data["encoder_semantic"][0],
                        "hooked inside _xcodec_encode: "
                        "encoder_semantic(get_regress_target(x).transpose(1,2)) (1,16,Ts)",
                    )
                    put(
                        f"L{L}/fused_prequant",
                        cap.data["fc_prior"][0],
                        "hooked inside _xcodec_encode: fc_prior(cat([acoustic, semantic],1).transpose(1,2)) (1,T,24)",
                    )
        if full is not None:
            with torch.no_grad():
                audio = torch.from_numpy(m.decode(full))
            assert audio.dtype == torch.float32 and audio.shape == (1, 1, 960 * full.shape[-1]), audio.shape
            assert torch.isfinite(audio).all()
            std = float(audio.std())
            assert 1e-3 < std < 1e3, std
            case["audio_key"] = f"L{L}/audio"
            case["audio_std"] = std
            case["audio_absmax"] = float(audio.abs().max())
            put(f"L{L}/audio", audio, "original decode(codes_bw_none) -> (1,1,960*T) float32 (numpy -> tensor)")
            case["unique_codes_per_codebook"] = [int(full[0, q].unique().numel()) for q in range(full.shape[1])]
            if L == LOWBW_DECODE[0]:
                low = tensors[f"L{L}/codes_bw_{_bw_tag(LOWBW_DECODE[1])}"]
                with torch.no_grad():
                    a_low = torch.from_numpy(m.decode(low))
                put(
                    f"L{L}/audio_bw_{_bw_tag(LOWBW_DECODE[1])}",
                    a_low,
                    f"original decode(codes_bw_{_bw_tag(LOWBW_DECODE[1])}) (prefix of the codebooks)",
                )
            # the public entry point (numpy + sr) must give the same codes as _xcodec_encode(x)[0]
            with torch.no_grad():
                api = m.encode(x[0, 0].numpy(), sr=24000)
            case["encode_api_equals_xcodec_encode"] = bool(torch.equal(api, full[0]))
        if L == INTERMEDIATE_LENGTH:
            with torch.no_grad():
                put(
                    f"L{L}/semantic_target",
                    m.get_regress_target(x),
                    "original get_regress_target(x): resample->pad160->HuBERT 3-state mean->[::2], (1,Ts,16)",
                )
                put(f"L{L}/acoustic_unpadded", m.encoder(x), "original encoder(x) on the unpadded input, (1,D,Ta)")
        cases.append(case)

    batch = []
    for L in BATCH_LENGTHS:
        x0 = tensors[f"L{L}/x"]
        x1 = seeded_noise(SEED_BATCH_SECOND + L, (1, 1, L))
        xb = torch.cat([x0, x1], 0)
        rec = collections.OrderedDict(L=L, B=2, item0=f"same as L{L}/x", item1_seed=SEED_BATCH_SECOND + L)
        try:
            with torch.no_grad():
                cb = m._xcodec_encode(xb).audio_codes
            put(f"batch_L{L}/x", xb, f"batch input (2,1,{L}): item 0 = L{L}/x, item 1 seed {SEED_BATCH_SECOND + L}")
            put(f"batch_L{L}/codes_bw_none", cb, "original _xcodec_encode(batch).audio_codes (2,8,T)")
            rec["codes_key"] = f"batch_L{L}/codes_bw_none"
            rec["shape"] = list(cb.shape)
            single = tensors.get(f"L{L}/codes_bw_none")
            rec["item0_equals_single"] = bool(single is not None and torch.equal(cb[:1], single))
        except Exception as e:  # noqa: BLE001
            rec["error"] = err_str(e)
        batch.append(rec)

    # ---------------- write the fixture ----------------
    sd = collections.OrderedDict((k, v.detach().clone().contiguous()) for k, v in m.state_dict().items())
    assert all(v.dtype == torch.float32 for v in sd.values())
    buf = io.BytesIO()
    torch.save(sd, buf)
    model_bytes = buf.getvalue()
    with open(os.path.join(out, "model.pth"), "wb") as f:
        f.write(model_bytes)
    back = torch.load(os.path.join(out, "model.pth"), weights_only=True)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    # round trip through the original loader code path (load_state_dict into a fresh tiny model)
    m2 = build_model()
    m2.load_state_dict(back, strict=True)
    m2.eval()
    with torch.no_grad():
        x = tensors["L24000/x"]
        assert torch.equal(m2._xcodec_encode(x).audio_codes, tensors["L24000/codes_bw_none"])

    cfg = collections.OrderedDict(CONFIG)
    cfg["tokenwave_geometry"] = GEOMETRY
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    meta = {"format": "tokenwave golden tensors from boson-multimodal 0.1.1 (see goldens.json)"}
    save_file(dict(tensors), os.path.join(out, "goldens.safetensors"), metadata=meta)
    os.chmod(os.path.join(out, "goldens.safetensors"), 0o644)

    prov = collections.OrderedDict(
        generator="tools/goldens/boson/make_goldens.sh (runs tools/goldens/boson/make_goldens.py)",
        boson_multimodal=BOSON_VERSION,
        boson_wheel=os.environ.get("BOSON_WHEEL_NAME"),
        boson_wheel_sha256=os.environ.get("BOSON_WHEEL_SHA256"),
        torch=torch.__version__,
        transformers=transformers.__version__,
        numpy=np.__version__,
        python=platform.python_version(),
        torch_threads=torch.get_num_threads(),
        hubert_attn_implementation=attn_impl,
        hubert_standin="transformers HubertModel(HubertConfig(**semantic_model_config, "
        f"mask_time_prob={STANDIN_MASK_TIME_PROB})), random",
        automodel_calls=standin_calls,
        seeds={
            "build": SEED_BUILD,
            "weights": SEED_WEIGHTS,
            "input": f"{SEED_INPUT_BASE} + L",
            "batch_item1": f"{SEED_BATCH_SECOND} + L",
        },
        weight_rules=rules,
        calibration=CALIBRATION,
        weight_norm_g_vs_norm_v=wn_rel,
        model_pth_sha256=hashlib.sha256(model_bytes).hexdigest(),
        model_pth_entries=len(sd),
        model_pth_numel=int(sum(v.numel() for v in sd.values())),
    )
    goldens_index = collections.OrderedDict(
        provenance=prov,
        notes=[
            "codes_bw_<bw>: HiggsAudioTokenizer._xcodec_encode(x, bw).audio_codes; bw 'none' = all 8 codebooks; "
            "n_q = max(1, floor(bw / 0.25)).",
            "audio: HiggsAudioTokenizer.decode(codes_bw_none); length 960*T, not cropped to L.",
            "Ta = unpadded acoustic frames, Ts = semantic frames; if Ta != Ts the original re-encodes "
            "F.pad(x[:,0,:], (320, 320)).unsqueeze(0) and then trims the longer branch (B=1 only).",
            "min_score_gap_per_codebook: smallest (best - second best) nearest-codeword score over all frames, "
            "scores = -(|z|^2 - 2 z.e + |e|^2) as in the original; small gaps mean fp-sensitive codes.",
        ],
        cases=cases,
        batch=batch,
        tensors=index,
    )
    with open(os.path.join(out, "goldens.json"), "w") as f:
        json.dump(goldens_index, f, indent=1)
        f.write("\n")
    write_readme(out, prov, cases, batch)

    for c in cases:
        print(
            json.dumps(
                {
                    k: c.get(k)
                    for k in (
                        "L",
                        "Ta",
                        "Ts",
                        "padding_branch",
                        "Ta_after_pad320",
                        "T",
                        "audio_std",
                        "unique_codes_per_codebook",
                        "error",
                    )
                }
            )
        )
    for b in batch:
        print(json.dumps(b))
    print("attn", attn_impl, "model.pth entries", len(sd), "numel", prov["model_pth_numel"])


def write_readme(out, prov, cases, batch):
    sizes = {
        n: os.path.getsize(os.path.join(out, n))
        for n in ("model.pth", "config.json", "goldens.safetensors", "goldens.json")
    }
    rows = []
    for c in cases:
        if "error" in c:
            rows.append(
                f"| {c['L']} | n/a (the unpadded encoder call fails) | {c['Ts_formula']} (formula) | "
                f"not reached | - | **original raises** `{c['error'][:90]}...` |"
            )
        else:
            pad = f"yes: pad 320/320 -> Ta={c['Ta_after_pad320']}" if c["padding_branch"] else "no"
            rows.append(f"| {c['L']} | {c['Ta']} | {c['Ts']} | {pad} | {c['T']} | codes + decoded audio |")
    brow = []
    for b in batch:
        if "error" in b:
            brow.append(f"* B=2, L={b['L']}: **original raises** `{b['error'][:110]}...`")
        else:
            brow.append(
                f"* B=2, L={b['L']}: codes {b['shape']} (`{b['codes_key']}`); item 0 equals the "
                f"single-item codes: {b['item0_equals_single']}"
            )
    hub = ", ".join(f"{k}={json.dumps(v)}" for k, v in HUBERT.items())
    what = {
        "model.pth": f"`torch.save` of the flat state dict, original key names, {prov['model_pth_entries']} float32 "
        f"tensors ({prov['model_pth_numel']} elements), incl. `weight_g`/`weight_v` and "
        "`semantic_model.masked_spec_embed`; loads with `torch.load(weights_only=True)`",
        "config.json": "original-format config + `tokenwave_geometry`",
        "goldens.safetensors": "inputs, codes, decoded audio, intermediates",
        "goldens.json": "index: shape/dtype/meaning of every tensor, per-length Ta/Ts/T, code margins, provenance",
    }
    files_table = "\n".join(f"| {n} | {sizes[n]} | {what[n]} |" for n in what)
    text = f"""# higgs_boson_tiny — goldens from the original Higgs Audio v2 tokenizer

Generated data, do not edit by hand.  Regenerate (bit-identical) with

```bash
bash tools/goldens/boson/make_goldens.sh      # venv: ${{BOSON_VENV:-/tmp/tokenwave-boson-venv}}
```

## Provenance

* Code under test: the ORIGINAL `HiggsAudioTokenizer` from PyPI `boson-multimodal=={prov["boson_multimodal"]}`
  (`{prov["boson_wheel"]}`, sha256 `{prov["boson_wheel_sha256"]}`), downloaded by the script with
  `pip download --no-deps` and imported in place. Its `_xcodec_encode`, `get_regress_target`, `decode`
  and every submodule `forward` run unmodified.
* Environment: python {prov["python"]}, torch {prov["torch"]}, transformers {prov["transformers"]} (inside
  the original's pin `transformers>=4.45.1,<4.47`), numpy {prov["numpy"]}; CPU, {prov["torch_threads"]} thread,
  `torch.use_deterministic_algorithms(True)`; HuBERT attention implementation `{prov["hubert_attn_implementation"]}`.
* Stand-ins on the import path: `tests/stubs/torchaudio` (our windowed-sinc `functional.resample`, written
  from torchaudio's documented defaults) and import-only placeholders in `tools/goldens/boson/stubs`
  (librosa, vector_quantize_pytorch, audiotools, omegaconf, pydub; never called). `dac` resolves to the
  DAC copy vendored inside the wheel.
* Semantic teacher: `AutoModel.from_pretrained("bosonai/hubert_base", trust_remote_code=True)` cannot be
  downloaded; it is replaced by a **random tiny transformers `HubertModel`** with the `semantic_model_config`
  below (built with HubertConfig's default `mask_time_prob=0.05` only so that it owns `masked_spec_embed`
  like the published model.pth; masking is training-only, so eval outputs are the same as with 0.0).
* Weights: random, seeded (`torch.manual_seed({SEED_BUILD})` for construction, generator seed {SEED_WEIGHTS} for
  the overwrite). Every floating parameter is moved off its default init: Snake `alpha` ~ U[0.5, 1.5];
  LayerNorm/GroupNorm weights 1 + 0.1·N; all biases 0.05·N; every `weight_g` (and HuBERT's pos-conv g)
  multiplied by U[0.5, 1.5] so that g ≠ ‖v‖ (folding weight norm matters); all other weights multiplied
  elementwise by (1 + 0.1·N). Codebooks: `embed` ~ N(0, 1), `embed_avg` = `embed`, `cluster_size` ~ U[1, 100]
  (unused at inference), `inited` = 1 (otherwise the original runs k-means inside forward). Then fixed gains
  {json.dumps(dict(CALIBRATION))} so that both branches are O(1) and codes vary across frames.
* Inputs: seeded noise `x = 0.1·N(0, 1)` float32, `torch.Generator().manual_seed({SEED_INPUT_BASE} + L)`.

## Tiny geometry

The original constructor hard-codes the DAC encoder width 64, decoder width 1024 and semantic widths 768;
here those submodules were rebuilt with the same original classes at tiny widths (same key layout as the
published checkpoint, HuBERT with 2 instead of 12 layers):

* config.json (original keys): n_filters 32 (unused by the original), D {CONFIG["D"]},
  codebook_dim {CONFIG["codebook_dim"]}, target_bandwidths {CONFIG["target_bandwidths"]},
  ratios {CONFIG["ratios"]} (hop 960, 25 frames/s), sample_rate 24000, bins 1024, n_q 8,
  semantic_techer hubert_base_general.
* `tokenwave_geometry` (our extension for test-size checkpoints; the published config has no such key):
  acoustic encoder d_model {ENC_WIDTH} (4→8→16→32→64→128 → latent {CONFIG["D"]}), acoustic decoder width {DEC_WIDTH}
  (32→16→8→4→2→1), semantic width {HUBERT["hidden_size"]}, fused/quantizer width {CONFIG["D"] + HUBERT["hidden_size"]},
  HuBERT: {hub}.

## Files

| file | bytes | content |
|---|---|---|
{files_table}

Per length (Ta = unpadded acoustic frames, Ts = semantic frames, T = code frames = floor((L+841)/960)):

| L | Ta | Ts | padding branch | T | goldens |
|---|---|---|---|---|---|
{chr(10).join(rows)}

For each successful L: `L<L>/x`, `L<L>/codes_bw_<none|0.5|1|1.5|2>` (int64 (1, n_q, T), n_q = 8/2/4/6/8)
and `L<L>/audio` = `decode(codes_bw_none)` (float32 (1, 1, 960·T), not cropped). Extras: `L24000/audio_bw_0.5`;
for L=30000 `semantic_target` (`get_regress_target(x)`), `acoustic_unpadded` (`encoder(x)`) and, hooked
inside `_xcodec_encode`, `acoustic_padded`, `semantic_encoded`, `fused_prequant`.

Batch behaviour of the original:

{chr(10).join(brow)}

## License

`boson-multimodal` is Apache-2.0 (LICENSE in the wheel; its tokenizer files note code based on xcodec and
DAC, MIT). This folder contains no code and no published weights: it is generated data (random weights,
seeded noise, and the original code's outputs on them).
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
