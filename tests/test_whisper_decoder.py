"""Whisper's text decoder and tokenizer (kocall.whisper_ctc.decoder / .tokenizer).

The decoder's teacher-forced logits are compared with openai-whisper's own TextDecoder
(the reference implementation, a dev dependency) on the same random weights; incremental
decoding with the key/value cache, beam reordering and padding against the full forward.
The tokenizer is checked on a small byte-level BPE built here, and against openai-whisper's
tiktoken encoding where the real tokenizer.json (tools/whisper-base-ct2, made by
`bash bench/install_peers.sh whisper`) is present.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kocall.errors import KocallError
from kocall.whisper_ctc.decoder import TextDecoder, load_decoder_state, token_log_probs
from kocall.whisper_ctc.tokenizer import WhisperTokenizer

ROOT = Path(__file__).resolve().parents[1]
CT2_DIR = ROOT / "tools" / "whisper-base-ct2"
TINY = {"n_vocab": 50, "n_text_ctx": 16, "n_text_state": 32, "n_text_head": 4, "n_text_layer": 2}
KOREAN = [" 안녕하세요 명동점 몇 번 출구로 나가요", " 삼성전자 AS센터 010-1234 입니다.", " 뷁 똠얌꿍 쀍"]


def random_reference(seed: int = 0):
    """openai-whisper's TextDecoder with every tensor drawn from N(0, 0.3) (not the default init,
    so a swapped name or a missing bias shows)."""
    whisper_model = pytest.importorskip("whisper.model", reason="openai-whisper (dev extra) is the reference")
    torch.manual_seed(seed)
    ref = whisper_model.TextDecoder(TINY["n_vocab"], TINY["n_text_ctx"], TINY["n_text_state"],
                                    TINY["n_text_head"], TINY["n_text_layer"])
    for param in ref.parameters():
        torch.nn.init.normal_(param, std=0.3)
    ours = TextDecoder(TINY)
    copied = load_decoder_state(ours, {f"decoder.{k}": v for k, v in ref.state_dict().items()}, "reference")
    assert copied == len(ours.state_dict())
    return ref.eval(), ours.eval()


def test_teacher_forced_logits_equal_openai_whisper() -> None:
    ref, ours = random_reference()
    tokens = torch.randint(0, TINY["n_vocab"], (3, 9))
    audio = torch.randn(3, 13, TINY["n_text_state"])
    with torch.no_grad():
        expected, got = ref(tokens, audio), ours(tokens, audio)
    assert expected.std() > 0.3   # not a degenerate output
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_incremental_cache_equals_full_forward_and_reference_cache() -> None:
    ref, ours = random_reference(seed=1)
    tokens = torch.randint(0, TINY["n_vocab"], (2, 8))
    audio = torch.randn(2, 11, TINY["n_text_state"])
    with torch.no_grad():
        full = ours(tokens, audio)
        cache: dict = {}
        steps = [ours(tokens[:, :3], audio, cache)] + [ours(tokens[:, i:i + 1], audio, cache) for i in range(3, 8)]
        assert TextDecoder.cached_length(cache) == 8
        # openai-whisper's own incremental path (its hooks' cache) gives the same last step
        ref_cache, hooks = ref_install_cache(ref)
        ref(tokens[:, :7], audio, kv_cache=ref_cache)
        ref_last = ref(tokens[:, 7:8], audio, kv_cache=ref_cache)
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(steps[-1], ref_last, atol=1e-4, rtol=1e-4)


def ref_install_cache(ref):
    """openai-whisper's kv-cache hooks (Whisper.install_kv_cache_hooks, on a bare TextDecoder)."""
    cache: dict = {}
    hooks = []

    def save(module, _, output):
        if module not in cache or output.shape[1] > ref.positional_embedding.shape[0]:
            cache[module] = output
        else:
            cache[module] = torch.cat([cache[module], output], dim=1).detach()
        return cache[module]

    for block in ref.blocks:
        for attn in (block.attn, block.cross_attn):
            hooks += [attn.key.register_forward_hook(save), attn.value.register_forward_hook(save)]
    return cache, hooks


def test_reorder_cache_follows_beams() -> None:
    _, ours = random_reference(seed=2)
    tokens = torch.randint(0, TINY["n_vocab"], (3, 6))
    audio = torch.randn(3, 10, TINY["n_text_state"])
    rows = torch.tensor([2, 0, 0])
    with torch.no_grad():
        cache: dict = {}
        ours(tokens[:, :5], audio, cache)
        cache = TextDecoder.reorder_cache(cache, rows)
        last = ours(tokens[rows, 5:6], audio[rows], cache)
        expected = ours(tokens[rows], audio[rows])[:, 5:6]
    torch.testing.assert_close(last, expected, atol=1e-4, rtol=1e-4)


def test_audio_mask_makes_rows_independent_of_padding() -> None:
    _, ours = random_reference(seed=3)
    tokens = torch.randint(0, TINY["n_vocab"], (2, 5))
    audio = torch.randn(2, 12, TINY["n_text_state"])
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        batched = ours(tokens, audio, audio_mask=mask)
        alone = ours(tokens[1:], audio[1:, :7])
        cache: dict = {}
        ours(tokens[:, :4], audio, cache, audio_mask=mask)
        step = ours(tokens[:, 4:], audio, cache)   # the mask is kept in the cache
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[1], alone[0, 4:], atol=1e-5, rtol=1e-5)


def test_token_log_probs_sum_the_teacher_forced_log_softmax() -> None:
    _, ours = random_reference(seed=4)
    audio = torch.randn(1, 9, TINY["n_text_state"])
    prefix, hyps, eot = [1, 2], [[5, 6, 7], [8]], 3
    with torch.no_grad():
        scores = token_log_probs(ours, audio, prefix, hyps, eot=eot)
        for hyp, score in zip(hyps, scores):
            seq = torch.tensor([prefix + hyp + [eot]])
            logp = torch.log_softmax(ours(seq[:, :-1], audio), dim=-1)[0]
            expected = sum(float(logp[i, seq[0, i + 1]]) for i in range(len(prefix) - 1, seq.size(1) - 1))
            assert float(score) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("with_cache", [False, True])
def test_tree_attention_gives_each_path_its_own_logits(with_cache: bool) -> None:
    """A prefix trie of hypotheses in one pass (parents): every node's logits equal those of its
    path decoded alone as a plain sequence, after the same cached prefix or none."""
    _, ours = random_reference(seed=5)
    audio = torch.randn(1, 10, TINY["n_text_state"])
    prefix = [1, 2] if with_cache else []
    #          0  1  2  3  4  5  6         paths: [5 6 7], [5 6 9 4], [5 8], [7]
    tokens = [5, 6, 7, 9, 4, 8, 7]
    parents = [-1, 0, 1, 1, 3, 0, -1]
    with torch.no_grad():
        cache: dict = {}
        if prefix:
            ours(torch.tensor([prefix]), audio, cache)
        before = {key: value.clone() for key, value in cache.items()}
        tree = ours(torch.tensor([tokens]), audio, cache if prefix else None, parents=parents)[0]
        for node in range(len(tokens)):
            path, up = [], node
            while up >= 0:
                path.insert(0, tokens[up])
                up = parents[up]
            alone = ours(torch.tensor([prefix + path]), audio)[0, -1]
            torch.testing.assert_close(tree[node], alone, atol=1e-4, rtol=1e-4)
    assert cache.keys() == before.keys() and all(torch.equal(cache[k], before[k]) for k in cache)   # read only
    with pytest.raises(KocallError, match="parent 2"):
        ours(torch.tensor([[5, 6, 7]]), audio, parents=[-1, 2, 0])
    with pytest.raises(KocallError, match="exceeds"):
        ours(torch.tensor([list(range(1, 18))]), audio, parents=[-1] + list(range(16)))
    wide = ours(torch.tensor([list(range(1, 18))]), audio, parents=[-1] * 17)   # 17 nodes, depth 1: fits
    assert wide.shape == (1, 17, TINY["n_vocab"])


def test_bad_dims_and_tensors_are_one_line() -> None:
    with pytest.raises(KocallError, match="n_text_head"):
        TextDecoder(dict(TINY, n_text_head=5))
    with pytest.raises(KocallError, match="n_vocab"):
        TextDecoder(dict(TINY, n_vocab=0))
    ours = TextDecoder(TINY)
    with pytest.raises(KocallError, match="'x.pt': no Whisper decoder tensors"):
        load_decoder_state(ours, {"encoder.conv1.weight": torch.zeros(1)}, "x.pt")
    state = {f"decoder.{k}": v for k, v in ours.state_dict().items()}
    state["decoder.ln.weight"] = torch.zeros(3)
    with pytest.raises(KocallError, match="'decoder.ln.weight' has shape"):
        load_decoder_state(ours, state, "x.pt")
    with pytest.raises(KocallError, match="exceed the decoder's 16 positions"):
        ours(torch.zeros(1, 17, dtype=torch.long), torch.zeros(1, 3, TINY["n_text_state"]))


def tiny_bpe_tokenizer(path: Path) -> None:
    """A byte-level BPE (Whisper's kind) trained on a few Korean lines, with Whisper's specials."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["안녕하세요 명동점", "몇 번 출구로 나가요", "안녕히 가세요"] * 5, trainer)
    tok.add_special_tokens(["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|ko|>", "<|translate|>",
                            "<|transcribe|>", "<|notimestamps|>"])
    tok.save(str(path))


def test_tokenizer_round_trip_bytes_and_sot(tmp_path: Path) -> None:
    tiny_bpe_tokenizer(tmp_path / "tokenizer.json")
    tok = WhisperTokenizer.from_dir(tmp_path)
    text = " 안녕하세요 명동점"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    base = tok.eot
    assert tok.sot_sequence() == [base + 1, base + 3, base + 5, base + 6]
    assert tok.sot_sequence(language="en", task="translate", timestamps=True) == [base + 1, base + 2, base + 4]
    assert tok.token_bytes(tok.eot) == b"" and tok.is_special(tok.sot)
    # "뷁" is unseen: its bytes split over tokens, and a prefix holds an unfinished character
    ids = tok.encode(" 뷁")
    assert [tok.token_bytes(i) for i in ids] == [b" \xeb", b"\xb7", b"\x81"]
    assert tok.split_complete(ids[:1]) == (" ", b"\xeb")
    assert tok.split_complete(ids[:2]) == (" ", b"\xeb\xb7")
    assert tok.split_complete(ids) == (" 뷁", b"")
    with pytest.raises(KocallError, match="no language 'xx'"):
        tok.sot_sequence(language="xx")
    with pytest.raises(KocallError, match="task 'dance'"):
        tok.sot_sequence(task="dance")


def test_tokenizer_bad_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(KocallError, match=f"folder '{tmp_path}': no Whisper tokenizer"):
        WhisperTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(KocallError, match="tokenizer.json': not a tokenizers tokenizer.json"):
        WhisperTokenizer.from_dir(tmp_path)
    tiny_bpe_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "vocabulary.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(KocallError, match="vocabulary.json': 2 tokens"):
        WhisperTokenizer.from_dir(tmp_path)


def test_real_tokenizer_equals_openai_whisper_tiktoken() -> None:
    if not (CT2_DIR / "tokenizer.json").is_file():
        pytest.skip(f"no {CT2_DIR}/tokenizer.json (bash bench/install_peers.sh whisper makes it)")
    reference = pytest.importorskip("whisper.tokenizer", reason="openai-whisper (dev extra) is the reference")
    ref = reference.get_tokenizer(True, num_languages=99, language="ko", task="transcribe")
    tok = WhisperTokenizer.from_dir(CT2_DIR)
    for text in KOREAN:
        assert tok.encode(text) == ref.encode(text)
        assert tok.decode(tok.encode(text)) == text
    assert tok.sot_sequence() == list(ref.sot_sequence_including_notimestamps)
    assert tok.eot == ref.eot and tok.n_vocab == 51865
