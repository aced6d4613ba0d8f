"""CUDA CTC prefix beam search (Numba CUDA): one thread block per utterance.

The block loops over its frames internally; beams, prefix hashes, LM states and the prefix
node pool stay in device memory for the whole utterance, so there is no host round trip per
frame (one launch per batch). Per frame, separated by barriers:

  A. token pruning: each passing token computes its rank (log-prob desc, id asc), early exit
     at top-k; rank < k writes the slot, so the list is ordered without a sort;
  B. stay candidates (blank / repeat of the last token), one thread per beam;
  C. merge detection: beam j == beam i + token -> that extension merges into j;
  D. extensions, one thread per (beam, token): n-gram query on the device (lm_score_device)
     and, with hotwords, the context automaton's step (context_step_device);
  E. a parallel top-K selection: every valid candidate counts the candidates ranked above it
     (score desc, hash asc: a strict total order), early exit at K, and writes itself to
     its rank's slot;
  F. the new beams are written to the other half of a double buffer.

Same conventions as `reference.py` and the CPU twin (`cpu.py`); tests run it under
NUMBA_ENABLE_CUDASIM=1 on tiny shapes.
"""
from __future__ import annotations

import warnings

import numpy as np
from numba import cuda

from kocall_kernels.ctc_decoder import HASH_INIT, HASH_MULT, LN10, DecoderConfig, Hypothesis
from kocall_kernels.ctc_decoder.context_graph import context_arrays, context_step_py
from kocall_kernels.ctc_decoder.cpu import check_context, lm_arrays, unpack
from kocall_kernels.logmath import better, log_add
from kocall_kernels.ngram.cuda import lm_score_device

_HASH_INIT = np.uint64(HASH_INIT)
_HASH_MULT = np.uint64(HASH_MULT)
NEG_INF = -np.inf
THREADS_PER_BLOCK = 128
# The same source as the CPU twin's context step, compiled for the device.
context_step_device = cuda.jit(device=True)(context_step_py)
# The rolling hash wraps modulo 2^64 on purpose; the simulator runs it as NumPy scalars, which warn.
warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning,
                        module=__name__)


# The CPU twin's scalar helpers, compiled for the device.
_log_add = cuda.jit(device=True, inline=True)(log_add)
_better = cuda.jit(device=True, inline=True)(better)


@cuda.jit
def _beam_search_kernel(log_probs, lens, beam, topk, min_logp, alpha_ln, beta, bonus_token, blank, nbest,
                        use_lm, sas, atok, alp, anext, bow, bto, bos_state, eos_id,
                        use_ctx, csas, catok, canext, cfail, cscore, cmask, cout, croot,
                        bh, bph, blen, blast, bpb, bpnb, bstate, blm, bcount, bnode, bcst, bctx,
                        cpb, cpnb, ctotal, chash, cstate, clm, cvalid, ccst, cctx,
                        tok_ids, merge_into, sel, node_parent, node_token, node_frame,
                        out_tokens, out_frames, out_len, out_score, out_am, out_lm, out_ctx, out_count):
    u = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nth = cuda.blockDim.x
    K = beam
    V = log_probs.shape[2]
    T = lens[u]
    counts = cuda.shared.array(4, np.int32)  # 0: n_b, 1: passing tokens, 2: valid candidates
    if tid == 0:
        counts[0] = 1
        bh[u, 0, 0] = _HASH_INIT
        bph[u, 0, 0] = np.uint64(0)
        blen[u, 0, 0] = 0
        blast[u, 0, 0] = -1
        bpb[u, 0, 0] = 0.0
        bpnb[u, 0, 0] = NEG_INF
        bstate[u, 0, 0] = bos_state
        blm[u, 0, 0] = 0.0
        bcount[u, 0, 0] = 0
        bnode[u, 0, 0] = -1
        bcst[u, 0, 0] = 0
        bctx[u, 0, 0] = 0.0
    cuda.syncthreads()
    n_nodes = 0
    for t in range(T):
        cur = t & 1
        nxt = 1 - cur
        n_b = counts[0]
        if tid == 0:
            counts[1] = 0
            counts[2] = 0
        cuda.syncthreads()
        # A. token pruning by rank
        for v in range(tid, V, nth):
            x = np.float64(log_probs[u, t, v])
            if v != blank and x >= min_logp:
                cuda.atomic.add(counts, 1, 1)
                rank = 0
                for w in range(V):
                    if w != blank:
                        y = np.float64(log_probs[u, t, w])
                        if y > x or (y == x and w < v):
                            rank += 1
                            if rank >= topk:
                                break
                if rank < topk:
                    tok_ids[u, rank] = v
        # B. stays
        blank_lp = np.float64(log_probs[u, t, blank])
        for j in range(tid, n_b, nth):
            cpb[u, j] = _log_add(bpb[u, cur, j], bpnb[u, cur, j]) + blank_lp
            if blen[u, cur, j] > 0:
                cpnb[u, j] = bpnb[u, cur, j] + np.float64(log_probs[u, t, blast[u, cur, j]])
            else:
                cpnb[u, j] = NEG_INF
            chash[u, j] = bh[u, cur, j]
        cuda.syncthreads()
        ntok = min(counts[1], topk)
        n_ext = n_b * ntok
        n_cand = n_b + n_ext
        for e in range(tid, n_ext, nth):
            merge_into[u, e] = -1
        cuda.syncthreads()
        # C. merge detection
        for j in range(tid, n_b, nth):
            if blen[u, cur, j] > 0:
                for i in range(n_b):
                    if blen[u, cur, i] == blen[u, cur, j] - 1 and bh[u, cur, i] == bph[u, cur, j]:
                        for p in range(ntok):
                            if tok_ids[u, p] == blast[u, cur, j]:
                                merge_into[u, i * ntok + p] = j
                                break
                        break
        cuda.syncthreads()
        # D. extensions
        for e in range(tid, n_ext, nth):
            i = e // ntok
            c = tok_ids[u, e - i * ntok]
            ci = n_b + e
            pb_i = bpb[u, cur, i]
            if blen[u, cur, i] > 0 and blast[u, cur, i] == c:
                base = pb_i  # a repeated token only starts a new symbol after a blank
            else:
                base = _log_add(pb_i, bpnb[u, cur, i])
            pnb = base + np.float64(log_probs[u, t, c])
            j = merge_into[u, e]
            if j >= 0:
                cpnb[u, j] = _log_add(cpnb[u, j], pnb)  # the only writer of j's p_nb now
                cvalid[u, ci] = 0
            else:
                cpb[u, ci] = NEG_INF
                cpnb[u, ci] = pnb
                chash[u, ci] = bh[u, cur, i] * _HASH_MULT + np.uint64(c + 1)
                lm = blm[u, cur, i]
                if use_lm:
                    l10, st = lm_score_device(sas, atok, alp, anext, bow, bto, bstate[u, cur, i], c)
                    lm += np.float64(l10)
                    cstate[u, ci] = st
                else:
                    cstate[u, ci] = bstate[u, cur, i]
                clm[u, ci] = lm
                ctx = bctx[u, cur, i]
                if use_ctx:
                    bonus, cst = context_step_device(csas, catok, canext, cfail, cscore, cmask, cout, croot,
                                                     bcst[u, cur, i], c)
                    ctx += bonus
                    ccst[u, ci] = cst
                else:
                    ccst[u, ci] = 0
                cctx[u, ci] = ctx
                counted = 1 if bonus_token < 0 or c == bonus_token else 0
                ctotal[u, ci] = pnb + alpha_ln * lm + beta * (bcount[u, cur, i] + counted) + ctx
                cvalid[u, ci] = 1 if pnb != NEG_INF else 0
        cuda.syncthreads()
        for j in range(tid, n_b, nth):
            am = _log_add(cpb[u, j], cpnb[u, j])
            ctotal[u, j] = am + alpha_ln * blm[u, cur, j] + beta * bcount[u, cur, j] + bctx[u, cur, j]
            cvalid[u, j] = 1 if am != NEG_INF else 0
        cuda.syncthreads()
        # E. parallel top-K by rank counting
        for ci in range(tid, n_cand, nth):
            if cvalid[u, ci]:
                cuda.atomic.add(counts, 2, 1)
                s = ctotal[u, ci]
                h = chash[u, ci]
                rank = 0
                for cj in range(n_cand):
                    if cvalid[u, cj] and _better(ctotal[u, cj], chash[u, cj], s, h):
                        rank += 1
                        if rank >= K:
                            break
                if rank < K:
                    sel[u, rank] = ci
        cuda.syncthreads()
        n_sel = min(counts[2], K)
        # F. new beams into the other buffer half
        for k in range(tid, n_sel, nth):
            ci = sel[u, k]
            bpb[u, nxt, k] = cpb[u, ci]
            bpnb[u, nxt, k] = cpnb[u, ci]
            if ci < n_b:
                bh[u, nxt, k] = bh[u, cur, ci]
                bph[u, nxt, k] = bph[u, cur, ci]
                blen[u, nxt, k] = blen[u, cur, ci]
                blast[u, nxt, k] = blast[u, cur, ci]
                bstate[u, nxt, k] = bstate[u, cur, ci]
                blm[u, nxt, k] = blm[u, cur, ci]
                bcount[u, nxt, k] = bcount[u, cur, ci]
                bnode[u, nxt, k] = bnode[u, cur, ci]
                bcst[u, nxt, k] = bcst[u, cur, ci]
                bctx[u, nxt, k] = bctx[u, cur, ci]
            else:
                e = ci - n_b
                i = e // ntok
                c = tok_ids[u, e - i * ntok]
                bh[u, nxt, k] = chash[u, ci]
                bph[u, nxt, k] = bh[u, cur, i]
                blen[u, nxt, k] = blen[u, cur, i] + 1
                blast[u, nxt, k] = c
                bstate[u, nxt, k] = cstate[u, ci]
                blm[u, nxt, k] = clm[u, ci]
                bcount[u, nxt, k] = bcount[u, cur, i] + (1 if bonus_token < 0 or c == bonus_token else 0)
                bcst[u, nxt, k] = ccst[u, ci]
                bctx[u, nxt, k] = cctx[u, ci]
                node = n_nodes + k  # one slot per beam per frame: no allocation race
                node_parent[u, node] = bnode[u, cur, i]
                node_token[u, node] = c
                node_frame[u, node] = t
                bnode[u, nxt, k] = node
        n_nodes += K
        cuda.syncthreads()
        if tid == 0:
            counts[0] = n_sel
        cuda.syncthreads()
    # end of sentence: LM `</s>`, the bonus a half-said hotword gives back, final totals, N-best
    n_b = counts[0]
    cur = T & 1
    for j in range(tid, n_b, nth):
        lm = blm[u, cur, j]
        if use_lm:
            l10, st = lm_score_device(sas, atok, alp, anext, bow, bto, bstate[u, cur, j], eos_id)
            lm += np.float64(l10)
        ctx = bctx[u, cur, j]
        if use_ctx:
            ctx -= np.float64(cscore[bcst[u, cur, j]])
        am = _log_add(bpb[u, cur, j], bpnb[u, cur, j])
        clm[u, j] = lm
        cpb[u, j] = am
        cctx[u, j] = ctx
        ctotal[u, j] = am + alpha_ln * lm + beta * bcount[u, cur, j] + ctx
    cuda.syncthreads()
    for j in range(tid, n_b, nth):
        rank = 0
        for i in range(n_b):
            if _better(ctotal[u, i], bh[u, cur, i], ctotal[u, j], bh[u, cur, j]):
                rank += 1
        if rank < nbest:
            out_score[u, rank] = ctotal[u, j]
            out_am[u, rank] = cpb[u, j]
            out_lm[u, rank] = clm[u, j]
            out_ctx[u, rank] = cctx[u, j]
            length = blen[u, cur, j]
            out_len[u, rank] = length
            node = bnode[u, cur, j]
            for pos in range(length - 1, -1, -1):
                out_tokens[u, rank, pos] = node_token[u, node]
                out_frames[u, rank, pos] = node_frame[u, node]
                node = node_parent[u, node]
    if tid == 0:
        out_count[u] = min(n_b, nbest)


class DeviceLM:
    """The LM tables on the device once, reused by every batch."""

    def __init__(self, tables) -> None:
        use_lm, *arrays, bos, eos = lm_arrays(tables)
        self.use_lm, self.bos, self.eos = use_lm, bos, eos
        self.arrays = tuple(cuda.to_device(a) for a in arrays)


class DeviceContext:
    """A hotwords ContextGraph on the device once, reused by every batch."""

    def __init__(self, graph) -> None:
        self.graph = graph
        use_ctx, *arrays = context_arrays(graph)
        self.use_ctx = use_ctx
        self.arrays = tuple(cuda.to_device(a) for a in arrays)


def decode_batch(log_probs, lens, cfg: DecoderConfig, tables=None, device_lm: DeviceLM | None = None,
                 threads_per_block: int = THREADS_PER_BLOCK, context=None,
                 device_context: DeviceContext | None = None) -> list[list[Hypothesis]]:
    """N-best lists for a (B, T, V) batch; `log_probs` may be a host array or a device array
    (e.g. a CUDA torch tensor through __cuda_array_interface__); `context`: hotwords
    ContextGraph (or `device_context`, the same already on the device)."""
    if device_lm is None:
        device_lm = DeviceLM(tables)
    if device_context is None:
        device_context = DeviceContext(context)
    check_context(device_context.graph, int(log_probs.shape[2]))
    if not hasattr(log_probs, "__cuda_array_interface__"):
        log_probs = np.ascontiguousarray(log_probs, dtype=np.float32)
    lens = np.ascontiguousarray(lens, dtype=np.int64)
    B, T = int(log_probs.shape[0]), int(log_probs.shape[1])
    if np.any(lens > T) or np.any(lens < 0):
        raise ValueError("lengths must be within 0..T")
    K, N, kt = cfg.beam, cfg.nbest, cfg.token_topk
    NC = K * (kt + 1)
    alpha_ln = cfg.lm_weight * LN10 if device_lm.use_lm else 0.0
    d = cuda.device_array
    beams = [d((B, 2, K), dt) for dt in (np.uint64, np.uint64, np.int32, np.int32, np.float64, np.float64,
                                         np.int32, np.float64, np.int32, np.int32, np.int32, np.float64)]
    cands = [d((B, NC), dt) for dt in (np.float64, np.float64, np.float64, np.uint64, np.int32, np.float64,
                                       np.int32, np.int32, np.float64)]
    work = [d((B, kt), np.int32), d((B, K * kt), np.int32), d((B, K), np.int32)]
    nodes = [d((B, max(T, 1) * K + 1), np.int32) for _ in range(3)]
    outs = [cuda.to_device(np.zeros((B, N, max(T, 1)), np.int32)), cuda.to_device(np.zeros((B, N, max(T, 1)), np.int32)),
            cuda.to_device(np.zeros((B, N), np.int32))] + [cuda.to_device(np.zeros((B, N), np.float64)) for _ in range(4)] \
        + [cuda.to_device(np.zeros(B, np.int32))]
    if B:
        _beam_search_kernel[B, threads_per_block](
            log_probs, cuda.to_device(lens), K, kt, float(cfg.token_min_logp), alpha_ln, float(cfg.word_bonus),
            cfg.bonus_token, cfg.blank_id, N, device_lm.use_lm, *device_lm.arrays, device_lm.bos, device_lm.eos,
            device_context.use_ctx, *device_context.arrays, *beams, *cands, *work, *nodes, *outs)
    return unpack(*(o.copy_to_host() for o in outs))
