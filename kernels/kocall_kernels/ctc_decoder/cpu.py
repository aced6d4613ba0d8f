"""CPU twin of the CTC prefix beam search: numba njit, utterances in parallel (prange).

Same algorithm, pruning, tie-breaking and score conventions as `reference.py` (see the
package docstring). Prefixes live in a per-utterance node pool (parent, token, frame), so
a beam is a few scalars and reselecting beams never copies token sequences; the
hypotheses are read back by following parents after the last frame.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from kocall_kernels.ctc_decoder import HASH_INIT, HASH_MULT, LN10, DecoderConfig, Hypothesis
from kocall_kernels.ctc_decoder.context_graph import context_arrays, context_step
from kocall_kernels.logmath import better, log_add
from kocall_kernels.ngram.cpu import lm_score

_HASH_INIT = np.uint64(HASH_INIT)
_HASH_MULT = np.uint64(HASH_MULT)
NEG_INF = -np.inf


@njit(cache=True, nogil=True)
def prune_tokens(row: np.ndarray, blank: int, topk: int, min_logp: float, out_ids: np.ndarray) -> int:
    """Fill out_ids with the frame's extending tokens (log-prob desc, id asc); return the count."""
    n = 0
    for v in range(row.shape[0]):
        if v == blank:
            continue
        x = np.float64(row[v])
        if x < min_logp:
            continue
        if n == topk and not x > row[out_ids[n - 1]]:
            continue
        j = n if n < topk else topk - 1
        while j > 0 and x > row[out_ids[j - 1]]:  # ids arrive ascending: equal log-probs keep id order
            out_ids[j] = out_ids[j - 1]
            j -= 1
        out_ids[j] = v
        if n < topk:
            n += 1
    return n


@njit(cache=True, nogil=True)
def decode_one(lp, T, beam, topk, min_logp, alpha_ln, beta, bonus_token, blank, nbest,
               use_lm, sas, atok, alp, anext, bow, bto, bos_state, eos_id,
               use_ctx, csas, catok, canext, cfail, cscore, cmask, cout, croot,
               out_tokens, out_frames, out_len, out_score, out_am, out_lm, out_ctx):
    """Decode lp[:T] (T, V); write up to nbest hypotheses into the out_* rows; return their count."""
    K = beam
    NC = K * (topk + 1)
    # current beams
    b_hash = np.empty(K, np.uint64)
    b_phash = np.empty(K, np.uint64)  # hash of the prefix without its last token
    b_len = np.empty(K, np.int32)
    b_last = np.empty(K, np.int32)
    b_pb = np.empty(K, np.float64)
    b_pnb = np.empty(K, np.float64)
    b_state = np.empty(K, np.int32)
    b_lm = np.empty(K, np.float64)
    b_count = np.empty(K, np.int32)
    b_node = np.empty(K, np.int32)
    b_cst = np.empty(K, np.int32)     # hotword context state
    b_ctx = np.empty(K, np.float64)   # hotword bonus so far
    # next beams
    n_hash = np.empty(K, np.uint64)
    n_phash = np.empty(K, np.uint64)
    n_len = np.empty(K, np.int32)
    n_last = np.empty(K, np.int32)
    n_pb = np.empty(K, np.float64)
    n_pnb = np.empty(K, np.float64)
    n_state = np.empty(K, np.int32)
    n_lm = np.empty(K, np.float64)
    n_count = np.empty(K, np.int32)
    n_node = np.empty(K, np.int32)
    n_cst = np.empty(K, np.int32)
    n_ctx = np.empty(K, np.float64)
    # candidates: stays at [0, n_b), extensions at n_b + i * ntok + p
    c_pb = np.empty(NC, np.float64)
    c_pnb = np.empty(NC, np.float64)
    c_total = np.empty(NC, np.float64)
    c_hash = np.empty(NC, np.uint64)
    c_state = np.empty(NC, np.int32)
    c_lm = np.empty(NC, np.float64)
    c_cst = np.empty(NC, np.int32)
    c_ctx = np.empty(NC, np.float64)
    c_valid = np.empty(NC, np.bool_)
    tok_ids = np.empty(topk, np.int32)
    merge_into = np.empty(K * topk, np.int32)
    # hotword steps of this frame's tokens, once per distinct non-root context state: hypotheses
    # that end alike share a state, and inside partial matches the step is the costly part
    st_state = np.empty(K, np.int32)
    st_bonus = np.empty((K, topk), np.float64)
    st_next = np.empty((K, topk), np.int32)
    hyp_slot = np.empty(K, np.int32)    # -1: the root (its dense row, inline)
    sel = np.empty(K, np.int32)
    node_parent = np.empty(T * K + 1, np.int32)
    node_token = np.empty(T * K + 1, np.int32)
    node_frame = np.empty(T * K + 1, np.int32)
    n_nodes = 0

    n_b = 1
    b_hash[0] = _HASH_INIT
    b_phash[0] = np.uint64(0)
    b_len[0] = 0
    b_last[0] = -1
    b_pb[0] = 0.0
    b_pnb[0] = NEG_INF
    b_state[0] = bos_state
    b_lm[0] = 0.0
    b_count[0] = 0
    b_node[0] = -1
    b_cst[0] = 0
    b_ctx[0] = 0.0

    for t in range(T):
        row = lp[t]
        ntok = prune_tokens(row, blank, topk, min_logp, tok_ids)
        blank_lp = np.float64(row[blank])
        for j in range(n_b):  # stay: through blank, or by repeating the last token
            c_pb[j] = log_add(b_pb[j], b_pnb[j]) + blank_lp
            c_pnb[j] = b_pnb[j] + np.float64(row[b_last[j]]) if b_len[j] > 0 else NEG_INF
            c_hash[j] = b_hash[j]
            c_valid[j] = True
        for e in range(n_b * ntok):
            merge_into[e] = -1
        if use_ctx:
            n_st = 0
            for i in range(n_b):
                hyp_slot[i] = -1
                if b_cst[i] == 0:
                    continue
                for k in range(n_st):
                    if st_state[k] == b_cst[i]:
                        hyp_slot[i] = k
                        break
                if hyp_slot[i] < 0:
                    st_state[n_st] = b_cst[i]
                    for p in range(ntok):
                        bonus, cst = context_step(csas, catok, canext, cfail, cscore, cmask, cout, croot, b_cst[i],
                                                  tok_ids[p])
                        st_bonus[n_st, p] = bonus
                        st_next[n_st, p] = cst
                    hyp_slot[i] = n_st
                    n_st += 1
        for j in range(n_b):  # beam j == beam i + token: that extension merges into j
            if b_len[j] == 0:
                continue
            for i in range(n_b):
                if b_len[i] == b_len[j] - 1 and b_hash[i] == b_phash[j]:
                    for p in range(ntok):
                        if tok_ids[p] == b_last[j]:
                            merge_into[i * ntok + p] = j
                            break
                    break
        for i in range(n_b):
            whole = log_add(b_pb[i], b_pnb[i])
            for p in range(ntok):
                e = i * ntok + p
                ci = n_b + e
                c = tok_ids[p]
                # a repeated token only starts a new symbol after a blank
                base = b_pb[i] if b_len[i] > 0 and b_last[i] == c else whole
                pnb = base + np.float64(row[c])
                j = merge_into[e]
                if j >= 0:
                    c_pnb[j] = log_add(c_pnb[j], pnb)
                    c_valid[ci] = False
                    continue
                c_pb[ci] = NEG_INF
                c_pnb[ci] = pnb
                c_hash[ci] = b_hash[i] * _HASH_MULT + np.uint64(c + 1)
                if use_lm:
                    l10, st = lm_score(sas, atok, alp, anext, bow, bto, b_state[i], c)
                    c_lm[ci] = b_lm[i] + np.float64(l10)
                    c_state[ci] = st
                else:
                    c_lm[ci] = b_lm[i]
                    c_state[ci] = b_state[i]
                if use_ctx:
                    if hyp_slot[i] < 0:  # most hypotheses sit at the root: its dense row, inline
                        cst = croot[c]
                        bonus = np.float64(cscore[cst]) + np.float64(cout[cst])
                    else:
                        bonus = st_bonus[hyp_slot[i], p]
                        cst = st_next[hyp_slot[i], p]
                    c_ctx[ci] = b_ctx[i] + bonus
                    c_cst[ci] = cst
                else:
                    c_ctx[ci] = 0.0
                    c_cst[ci] = 0
                counted = 1 if bonus_token < 0 or c == bonus_token else 0
                am = pnb
                c_total[ci] = am + alpha_ln * c_lm[ci] + beta * (b_count[i] + counted) + c_ctx[ci]
                c_valid[ci] = am != NEG_INF
        for j in range(n_b):
            am = log_add(c_pb[j], c_pnb[j])
            c_total[j] = am + alpha_ln * b_lm[j] + beta * b_count[j] + b_ctx[j]
            c_valid[j] = am != NEG_INF
        # top-K by insertion into a sorted list (most candidates fail the first comparison)
        n_sel = 0
        for ci in range(n_b + n_b * ntok):
            if not c_valid[ci]:
                continue
            s = c_total[ci]
            h = c_hash[ci]
            if n_sel == K and not better(s, h, c_total[sel[K - 1]], c_hash[sel[K - 1]]):
                continue
            k = n_sel if n_sel < K else K - 1
            while k > 0 and better(s, h, c_total[sel[k - 1]], c_hash[sel[k - 1]]):
                sel[k] = sel[k - 1]
                k -= 1
            sel[k] = ci
            if n_sel < K:
                n_sel += 1
        for k in range(n_sel):
            ci = sel[k]
            n_pb[k] = c_pb[ci]
            n_pnb[k] = c_pnb[ci]
            if ci < n_b:
                n_hash[k] = b_hash[ci]
                n_phash[k] = b_phash[ci]
                n_len[k] = b_len[ci]
                n_last[k] = b_last[ci]
                n_state[k] = b_state[ci]
                n_lm[k] = b_lm[ci]
                n_count[k] = b_count[ci]
                n_node[k] = b_node[ci]
                n_cst[k] = b_cst[ci]
                n_ctx[k] = b_ctx[ci]
            else:
                e = ci - n_b
                i = e // ntok
                c = tok_ids[e - i * ntok]
                n_hash[k] = c_hash[ci]
                n_phash[k] = b_hash[i]
                n_len[k] = b_len[i] + 1
                n_last[k] = c
                n_state[k] = c_state[ci]
                n_lm[k] = c_lm[ci]
                n_count[k] = b_count[i] + (1 if bonus_token < 0 or c == bonus_token else 0)
                n_cst[k] = c_cst[ci]
                n_ctx[k] = c_ctx[ci]
                node_parent[n_nodes] = b_node[i]
                node_token[n_nodes] = c
                node_frame[n_nodes] = t
                n_node[k] = n_nodes
                n_nodes += 1
        n_b = n_sel
        b_hash, n_hash = n_hash, b_hash
        b_phash, n_phash = n_phash, b_phash
        b_len, n_len = n_len, b_len
        b_last, n_last = n_last, b_last
        b_pb, n_pb = n_pb, b_pb
        b_pnb, n_pnb = n_pnb, b_pnb
        b_state, n_state = n_state, b_state
        b_lm, n_lm = n_lm, b_lm
        b_count, n_count = n_count, b_count
        b_node, n_node = n_node, b_node
        b_cst, n_cst = n_cst, b_cst
        b_ctx, n_ctx = n_ctx, b_ctx

    # the end-of-sentence LM score (and the hotword bonus a half-said phrase gives back),
    # then the N-best by the same order
    for j in range(n_b):
        lm_final = b_lm[j]
        if use_lm:
            l10, st = lm_score(sas, atok, alp, anext, bow, bto, b_state[j], eos_id)
            lm_final += np.float64(l10)
        ctx_final = b_ctx[j] - np.float64(cscore[b_cst[j]]) if use_ctx else 0.0
        am = log_add(b_pb[j], b_pnb[j])
        c_lm[j] = lm_final
        c_pb[j] = am
        c_ctx[j] = ctx_final
        c_total[j] = am + alpha_ln * lm_final + beta * b_count[j] + ctx_final
    n_out = 0
    for j in range(n_b):
        s = c_total[j]
        h = b_hash[j]
        if n_out == nbest and not better(s, h, c_total[sel[nbest - 1]], b_hash[sel[nbest - 1]]):
            continue
        k = n_out if n_out < nbest else nbest - 1
        while k > 0 and better(s, h, c_total[sel[k - 1]], b_hash[sel[k - 1]]):
            sel[k] = sel[k - 1]
            k -= 1
        sel[k] = j
        if n_out < nbest:
            n_out += 1
    for k in range(n_out):
        j = sel[k]
        out_score[k] = c_total[j]
        out_am[k] = c_pb[j]
        out_lm[k] = c_lm[j]
        out_ctx[k] = c_ctx[j]
        length = b_len[j]
        out_len[k] = length
        node = b_node[j]
        for pos in range(length - 1, -1, -1):
            out_tokens[k, pos] = node_token[node]
            out_frames[k, pos] = node_frame[node]
            node = node_parent[node]
    return n_out


@njit(cache=True, parallel=True)
def decode_batch_kernel(log_probs, lens, beam, topk, min_logp, alpha_ln, beta, bonus_token, blank, nbest,
                        use_lm, sas, atok, alp, anext, bow, bto, bos_state, eos_id,
                        use_ctx, csas, catok, canext, cfail, cscore, cmask, cout, croot,
                        out_tokens, out_frames, out_len, out_score, out_am, out_lm, out_ctx, out_count):
    for b in prange(log_probs.shape[0]):
        out_count[b] = decode_one(log_probs[b], lens[b], beam, topk, min_logp, alpha_ln, beta, bonus_token, blank,
                                  nbest, use_lm, sas, atok, alp, anext, bow, bto, bos_state, eos_id,
                                  use_ctx, csas, catok, canext, cfail, cscore, cmask, cout, croot,
                                  out_tokens[b], out_frames[b], out_len[b], out_score[b], out_am[b], out_lm[b],
                                  out_ctx[b])


def lm_arrays(tables) -> tuple:
    """(use_lm, six table arrays, bos_state, eos_id); typed placeholders when there is no LM."""
    if tables is None:
        return (False, np.zeros(2, np.int64), np.zeros(1, np.int32), np.zeros(1, np.float32), np.zeros(1, np.int32),
                np.zeros(1, np.float32), np.zeros(1, np.int32), 0, 0)
    return (True, *tables.arrays(), int(tables.bos_state), int(tables.vocab_size))


def check_context(context, vocab_size: int) -> None:
    """A context graph must cover the posteriors' units (its dense root row is indexed by unit)."""
    if context is not None and context.vocab_size < vocab_size:
        raise ValueError(f"hotword graph covers {context.vocab_size} units, the posteriors have {vocab_size}")


def unpack(out_tokens, out_frames, out_len, out_score, out_am, out_lm, out_ctx, out_count) -> list[list[Hypothesis]]:
    result = []
    for b in range(out_count.shape[0]):
        hyps = []
        for k in range(int(out_count[b])):
            n = int(out_len[b, k])
            hyps.append(Hypothesis(out_tokens[b, k, :n].tolist(), float(out_score[b, k]), float(out_am[b, k]),
                                   float(out_lm[b, k]), out_frames[b, k, :n].tolist(), float(out_ctx[b, k])))
        result.append(hyps)
    return result


def decode_batch(log_probs: np.ndarray, lens: np.ndarray, cfg: DecoderConfig, tables=None,
                 context=None) -> list[list[Hypothesis]]:
    """N-best lists for a (B, T, V) batch of natural-log posteriors; `tables`: NgramTables or None;
    `context`: a hotwords ContextGraph or None."""
    log_probs = np.ascontiguousarray(log_probs, dtype=np.float32)
    lens = np.ascontiguousarray(lens, dtype=np.int64)
    B, T = log_probs.shape[0], log_probs.shape[1]
    if np.any(lens > T) or np.any(lens < 0):
        raise ValueError("lengths must be within 0..T")
    use_lm, *arrays, bos, eos = lm_arrays(tables)
    check_context(context, log_probs.shape[2])
    alpha_ln = cfg.lm_weight * LN10 if use_lm else 0.0
    N = cfg.nbest
    out_tokens = np.zeros((B, N, max(T, 1)), np.int32)
    out_frames = np.zeros((B, N, max(T, 1)), np.int32)
    out_len = np.zeros((B, N), np.int32)
    out_score = np.zeros((B, N), np.float64)
    out_am = np.zeros((B, N), np.float64)
    out_lm = np.zeros((B, N), np.float64)
    out_ctx = np.zeros((B, N), np.float64)
    out_count = np.zeros(B, np.int32)
    decode_batch_kernel(log_probs, lens, cfg.beam, cfg.token_topk, float(cfg.token_min_logp), alpha_ln,
                        float(cfg.word_bonus), cfg.bonus_token, cfg.blank_id, N, use_lm, *arrays, bos, eos,
                        *context_arrays(context), out_tokens, out_frames, out_len, out_score, out_am, out_lm, out_ctx,
                        out_count)
    return unpack(out_tokens, out_frames, out_len, out_score, out_am, out_lm, out_ctx, out_count)
