"""``tokenwave tts`` (tokenwave.cli.tts) driven through typer's CliRunner, registered on a local app the way main.py
registers it. The generation model is a tiny random HiggsGenModel (real vocabulary and special ids, text head, the
stream-EOS rows of the audio head scaled up so that spans end by themselves: ``_randomize`` of test_tts_generate)
saved in the transformers format with the synthetic text tokenizer of test_tts_prompt next to it; the audio
tokenizer is the tiny random Higgs tokenizer of conftest. Every result of the command is checked against the
library (TTSEngine / TTSRequest) with the same options, so the options are known to reach it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from typer.testing import CliRunner

from conftest import randomize_, tiny_config
from test_tts_generate import _randomize, _write_wav
from test_tts_prompt import _write_tokenizer
from tokenwave.cli.tts import SHORT_HELP, tts
from tokenwave.codecs.higgs import HiggsAudioTokenizer
from tokenwave.codesfile import read_codes
from tokenwave.tts.checkpoint import save_pretrained
from tokenwave.tts.config import HiggsGenConfig
from tokenwave.tts.engine import TTSEngine, TTSRequest
from tokenwave.tts.model import HiggsGenModel
from tokenwave.tts.sampling import SamplingConfig

pytestmark = pytest.mark.usefixtures("one_thread")

HOP, SR = 960, 24000
REF_TEXT = "Hello there, this is Alice."
SCRIPT = "[SPEAKER0] Good morning, how are you?\n[SPEAKER1] Very well, thank you.\n"


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, rich_markup_mode=None)

    @app.callback()
    def _main() -> None:
        """test app"""

    app.command("tts", short_help=SHORT_HELP)(tts)
    return app


APP = _app()


def cli(*args):
    return CliRunner().invoke(APP, ["tts", *map(str, args)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(generation model folder, same model in the original format, voices folder, audio tokenizer folder). All
    weights are fixed by seeds (the audio tokenizer is built here, not taken from conftest's session fixture, whose
    initial weights depend on the global generator's state when it is first used), so the frame counts the tests
    rely on do not depend on which tests ran before."""
    root = tmp_path_factory.mktemp("tts_cli")
    torch.manual_seed(0)
    audio_tok = root / "audio_tok"
    randomize_(HiggsAudioTokenizer(tiny_config()), seed=0).save_pretrained(audio_tok)
    tok_dir = _write_tokenizer(root / "tok", merging=False)
    cfg = HiggsGenConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=8)
    model = HiggsGenModel(cfg)
    _randomize(model, 0)
    folders = []
    for fmt in ("transformers", "original"):
        folder = save_pretrained(model, root / f"gen_{fmt}", format=fmt, dtype=torch.float32)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tok_dir / name, folder / name)
        folders.append(folder)
    voices = root / "voices"
    voices.mkdir()
    _write_wav(voices / "alice.wav", 0.6, 16000, seed=0)
    (voices / "alice.txt").write_text(REF_TEXT + "\n")
    _write_wav(voices / "bob.wav", 0.5, 24000, seed=1)
    (voices / "bob.txt").write_text("I am Bob.\n")
    return folders[0], folders[1], voices, audio_tok


@pytest.fixture(scope="module")
def engine(setup):
    gen, _, voices, audio_tok = setup
    return TTSEngine(gen, audio_tok, voices_dir=voices)


def _run_ok(setup, *args):
    gen, _, _, audio_tok = setup
    r = cli(*args, "-m", gen, "--audio-tokenizer", audio_tok)
    assert r.exit_code == 0, r.output + r.stderr
    return r


def _wav(path):
    audio, rate = sf.read(path, dtype="float32")
    assert audio.ndim == 1
    return torch.from_numpy(audio), rate


# ---- outputs ---------------------------------------------------------------------------------------------------
def test_defaults_are_the_librarys():
    """The CLI writes its defaults out (no torch at import); they must be the library's."""
    from tokenwave.cli import tts as cli_tts
    from tokenwave.tts import config, engine, prompt

    assert cli_tts.DEFAULT_MODEL == config.PUBLISHED_REPO
    assert cli_tts.DEFAULT_AUDIO_TOKENIZER == engine.DEFAULT_AUDIO_TOKENIZER
    assert cli_tts.DEFAULT_SCENE == prompt.DEFAULT_SCENE
    assert cli_tts._DEFAULT_MAX_CONTEXT == engine.DEFAULT_MAX_CONTEXT
    r = cli("--help")
    assert r.exit_code == 0
    defaults = SamplingConfig.serve_engine(temperature=0.7, top_k=None, top_p=0.95, ras_win_len=7,
                                           ras_win_max_num_repeat=2)
    assert defaults == engine.SERVE_ENGINE_SAMPLING
    for option in ("--temperature", "--top-p", "--ras-window", "--script", "--stream", "--save-codes"):
        assert option in r.output


def test_cloned_voice_writes_wav_and_codes_as_the_engine(setup, engine, tmp_path):
    """A reference voice, non-default sampling and a seed: the WAV is the engine's audio for the same request
    (bit-exact in float WAV), its length is frames x hop at the tokenizer's rate, and the codes file holds the
    engine's codes with the tokenizer's identity (so `tokenwave decode` accepts it)."""
    _, _, voices, _ = setup
    out, codes_path = tmp_path / "out.wav", tmp_path / "out.twc"
    r = _run_ok(setup, "Good morning to you", "--ref-audio", voices / "alice.wav", "--ref-text", REF_TEXT,
                "-o", out, "--save-codes", codes_path, "--seed", 3, "--temperature", 0.9, "--top-k", 50,
                "--top-p", 0.9, "--ras-window", 5, "--ras-max-repeat", 1, "--max-frames", 80)
    assert "wrote" in r.output and str(out) in r.output
    audio, rate = _wav(out)
    codes, header = read_codes(codes_path)
    sampling = SamplingConfig.serve_engine(temperature=0.9, top_k=50, top_p=0.9, ras_win_len=5,
                                           ras_win_max_num_repeat=1)
    want = engine.generate(TTSRequest("Good morning to you", reference_audio=voices / "alice.wav",
                                      reference_text=REF_TEXT, sampling=sampling, seed=3, max_frames=80))
    assert want.codes.shape[1] > 10
    assert rate == SR and audio.shape[0] == codes.shape[1] * HOP == want.audio.shape[0]
    assert torch.equal(torch.from_numpy(codes.astype(np.int64)), want.codes)
    assert torch.equal(audio, want.audio)
    tok = engine.audio_tokenizer
    assert (header.sample_rate, header.frame_rate, header.num_samples) == (SR, 25.0, audio.shape[0])
    assert (header.config_hash, header.num_codebooks, header.codebook_size) == (tok.config_hash, 8, 1024)
    # another seed gives other audio (the seed reaches the sampler)
    out2 = tmp_path / "out2.wav"
    _run_ok(setup, "Good morning to you", "--ref-audio", voices / "alice.wav", "--ref-text", REF_TEXT, "-o", out2,
            "--seed", 4, "--temperature", 0.9, "--top-k", 50, "--top-p", 0.9, "--max-frames", 80, "-q")
    assert not torch.equal(_wav(out2)[0][:1000], audio[:1000])


def test_stream_equals_offline(setup, tmp_path):
    """--stream with the same seed: the same codes, and audio within 1e-4 of the peak of the offline WAV (the
    streaming decoder's tolerance); the time to first audio is printed."""
    _, _, voices, _ = setup
    common = ("Good morning to you, my friend", "--voice", "alice", "--voices-dir", voices, "--seed", 9,
              "--max-frames", 80)
    _run_ok(setup, *common, "-o", tmp_path / "a.wav", "--save-codes", tmp_path / "a.twc")
    r = _run_ok(setup, *common, "-o", tmp_path / "b.wav", "--save-codes", tmp_path / "b.twc", "--stream",
                "--stream-frames", 4)
    assert "first audio after" in r.output and "time to first audio" in r.output
    offline, _ = _wav(tmp_path / "a.wav")
    streamed, rate = _wav(tmp_path / "b.wav")
    codes_a, codes_b = read_codes(tmp_path / "a.twc")[0], read_codes(tmp_path / "b.twc")[0]
    assert np.array_equal(codes_a, codes_b) and codes_a.shape[1] > 10
    assert rate == SR and streamed.shape == offline.shape == (codes_a.shape[1] * HOP,)
    err = float((streamed - offline).abs().max() / offline.abs().max())
    print(f"stream vs offline max|diff|/peak {err:.2e}")
    assert err <= 1e-4


def test_script_with_speaker_voices_and_descriptions(setup, engine, tmp_path):
    """A two-speaker script: one voice from a file, one preset, chunked by speaker; and the same script with voice
    descriptions. Each result equals the engine's for the same request; both formats of the model agree."""
    gen, original, voices, audio_tok = setup
    script = tmp_path / "script.txt"
    script.write_text(SCRIPT)
    out = tmp_path / "dialog.wav"
    _run_ok(setup, "--script", script, "--speaker-audio", f"0={voices / 'alice.wav'}", "--speaker-text",
            f"0={REF_TEXT}", "--speaker-voice", "1=bob", "--voices-dir", voices, "--chunk", "speaker", "--seed", 5,
            "--max-frames", 60, "-o", out, "--save-codes", tmp_path / "dialog.twc")
    want = engine.generate(TTSRequest(SCRIPT, speakers=[(voices / "alice.wav", REF_TEXT), "bob"],
                                      chunk_method="speaker", seed=5, max_frames=60))
    assert want.stats.chunks == 2
    assert torch.equal(torch.from_numpy(read_codes(tmp_path / "dialog.twc")[0].astype(np.int64)), want.codes)
    assert torch.equal(_wav(out)[0], want.audio)

    # greedy with RAS off: no random draw at all
    descriptions = ("--speaker-description", "0=calm female voice", "--speaker-description", "1=deep male voice")
    for folder, name in ((gen, "t.wav"), (original, "o.wav")):
        r = cli("--script", script, *descriptions, "--temperature", 0, "--ras-window", 0, "--max-frames", 40,
                "-o", tmp_path / name, "-m", folder, "--audio-tokenizer", audio_tok)
        assert r.exit_code == 0, r.output + r.stderr
    greedy = SamplingConfig.serve_engine(temperature=0, ras_win_len=0)
    want = engine.generate(TTSRequest(SCRIPT, speaker_descriptions={0: "calm female voice", 1: "deep male voice"},
                                      sampling=greedy, max_frames=40))
    assert want.audio.shape[0] > 0
    assert torch.equal(_wav(tmp_path / "t.wav")[0], want.audio)
    assert torch.equal(_wav(tmp_path / "o.wav")[0], want.audio)


# ---- errors ----------------------------------------------------------------------------------------------------
def _fails(setup, code: int, *args, model=True):
    gen, _, _, audio_tok = setup
    extra = ("-m", gen, "--audio-tokenizer", audio_tok) if model else ()
    r = cli(*args, *extra)
    assert r.exit_code == code, (r.exit_code, r.output, r.stderr)
    assert r.stderr.startswith("error: ")
    return r.stderr


def test_missing_checkpoints_say_how_to_get_them(setup, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    gen, _, _, audio_tok = setup
    out = tmp_path / "x.wav"
    # the default model, offline and not cached
    err = _fails(setup, 2, "Hi.", "-o", out, model=False)
    assert "--model" in err and "bosonai/higgs-audio-v2-generation-3B-base" in err and "HF_HUB_OFFLINE" in err
    assert "hf download bosonai/higgs-audio-v2-generation-3B-base --local-dir DIR" in err
    assert "pass it with --model DIR" in err and "TOKENWAVE_MODEL" not in err
    err = _fails(setup, 2, "Hi.", "-o", out, "-m", tmp_path / "nowhere", model=False)
    assert "nowhere" in err and "--model" in err
    err = _fails(setup, 2, "Hi.", "-o", out, "-m", gen, "--audio-tokenizer", "someone/no-tokenizer", model=False)
    assert "--audio-tokenizer" in err and "hf download someone/no-tokenizer" in err
    assert "pass it with --audio-tokenizer DIR" in err
    bare = tmp_path / "bare"
    shutil.copytree(gen, bare, ignore=shutil.ignore_patterns("tokenizer*"))
    err = _fails(setup, 1, "Hi.", "-o", out, "-m", bare, "--audio-tokenizer", audio_tok, model=False)
    assert "no tokenizer.json" in err
    assert not out.exists()


def test_unknown_speakers(setup, tmp_path):
    _, _, voices, _ = setup
    script = tmp_path / "script.txt"
    script.write_text(SCRIPT)
    out = tmp_path / "x.wav"
    wav = voices / "alice.wav"
    err = _fails(setup, 2, "--script", script, "--speaker-audio", f"0={wav}", "--speaker-text", "0=Hello.", "-o", out)
    assert "unknown speaker [SPEAKER1]" in err
    err = _fails(setup, 2, "--script", script, "--ref-audio", wav, "--ref-text", "Hello.", "-o", out)
    assert "unknown speaker [SPEAKER1]" in err
    err = _fails(setup, 2, "--script", script, "--speaker-description", "0=calm", "-o", out)
    assert "unknown speaker [SPEAKER1]" in err and "--speaker-description 1" in err
    err = _fails(setup, 2, "--script", script, "--speaker-voice", "1=bob", "--voices-dir", voices, "-o", out)
    assert "speaker 0 has no --speaker-audio or --speaker-voice" in err
    err = _fails(setup, 2, "--script", script, "--speaker-voice", "0=alice", "--speaker-voice", "1=carol",
                 "--voices-dir", voices, "-o", out)
    assert "unknown voice 'carol'" in err and "available: alice, bob" in err
    assert not out.exists()


def test_bad_reference_audio(setup, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio at all")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(4000, np.nan, dtype=np.float32), SR, subtype="FLOAT")
    out = tmp_path / "x.wav"
    for path in (junk, nan, tmp_path / "missing.wav"):
        err = _fails(setup, 2, "Hi there.", "--ref-audio", path, "--ref-text", "Hello.", "-o", out)
        assert path.name in err and ("bad reference audio" in err or "not found" in err)
    err = _fails(setup, 2, "Hi there.", "--speaker-audio", f"0={junk}", "--speaker-text", "0=Hello.", "-o", out)
    assert junk.name in err
    assert not out.exists()


def test_prompt_longer_than_the_context(setup, tmp_path):
    out = tmp_path / "x.wav"
    for stream in ((), ("--stream",)):
        err = _fails(setup, 2, "Hi there.", "--max-context", 40, "-o", out, *stream)
        assert "leaves no room for generation in a context of 40" in err and "--max-context" in err
    assert not out.exists()


def test_usage_errors(setup, tmp_path):
    _, _, voices, _ = setup
    out = tmp_path / "x.wav"
    wav = voices / "alice.wav"
    cases = [
        (("-o", out), "give the text to speak"),
        (("Hi.", "--script", tmp_path / "s.txt", "-o", out), "one of the two"),
        (("--script", tmp_path / "missing.txt", "-o", out), "cannot read it"),
        (("Hi.", "-o", tmp_path / "x.mp3"), "use a name ending in .wav"),
        (("Hi.", "-o", out, "--save-codes", tmp_path / "c.npy"), "codes files end in .twc"),
        (("Hi.", "-o", out, "--ref-audio", wav), "--ref-audio and --ref-text go together"),
        (("Hi.", "-o", out, "--speaker-text", "0=Hello."), "has no --speaker-audio 0=FILE"),
        (("Hi.", "-o", out, "--speaker-audio", f"0={wav}"), "needs --speaker-text 0="),
        (("Hi.", "-o", out, "--speaker-audio", str(wav)), "expected N=VALUE"),
        (("Hi.", "-o", out, "--voice", "alice"), "need --voices-dir"),
        (("Hi.", "-o", out, "--voice", "alice", "--voices-dir", voices, "--ref-audio", wav, "--ref-text", "Hi."),
         "give one kind of voice"),
        (("Hi.", "-o", out, "--voice", "bob", "--voices-dir", voices, "--speaker-description", "0=calm"),
         "--speaker-description is for speakers without a voice"),
        (("Hi.", "-o", out, "--top-p", 0), "top_p"),
    ]
    for args, message in cases:
        err = _fails(setup, 2, *args, model=False)
        assert message in err, (args, err)
    r = cli("Hi.")
    assert r.exit_code == 2 and "--output" in r.stderr
    short = _fails(setup, 1, "Hi.", "-o", out, "--max-frames", 3)  # no complete frame within 3 steps
    assert "no audio was generated" in short and "--max-frames" in short
    assert not out.exists()


def test_import_loads_no_torch():
    code = "import sys, tokenwave.cli.tts; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
