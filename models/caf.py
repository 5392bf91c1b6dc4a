"""Audio-visual cross-attention fusion, CAF (paper Sec. 2.1, Eq. 1-3).

The paper writes features as columns (``X ∈ R^{d×L}``); here they are rows (``(B, T, d)``), so
``X A`` of Eq. 2 becomes ``Aᵀ X``. Videos without an audio track (``has_audio`` False) have no
valid audio segment: their audio features are zeroed before encoding, the audio branch outputs
zeros, and the visual branch skips the audio-guided re-weighting (``X̃_CBP = X_CBP``), so nothing is
learned from the placeholder rows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cross_attention(x_audio: torch.Tensor, x_cbp: torch.Tensor, weight: torch.Tensor,
                    audio_mask: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """One stage of cross-attention (Eq. 1-2).

    Args:
        x_audio, x_cbp: ``(B, T, d)`` segment features of the two modalities.
        weight: ``(d, d)`` the learnable ``W`` bridging the modalities.
        audio_mask: ``(B, T)`` valid audio segments (False on padding and on videos without audio).
        mask: ``(B, T)`` valid snippets.
    Returns:
        ``x_audio`` / ``x_cbp``: the re-weighted ``X̃`` ``(B, T, d)``; ``lam``: Λ ``(B, T, T)`` with
        ``lam[b, i, j] = x̂_audio_i · W x̂_cbp_j``; ``a_audio``: column-softmax of Λ (each column j sums
        to 1 over the audio segments i); ``a_cbp``: column-softmax of Λᵀ.
    """
    lam = F.normalize(x_audio, dim=-1) @ weight @ F.normalize(x_cbp, dim=-1).transpose(1, 2)  # Eq. 1
    neg = torch.finfo(lam.dtype).min
    has_audio = audio_mask.any(dim=1)                                   # (B,)
    full = bool(audio_mask.all())                                        # no padding, audio everywhere
    # A_audio = softmax over the columns of Λ: for CBP segment j, weights over audio segments i.
    a_audio = (lam if full else lam.masked_fill(~audio_mask[:, :, None], neg)).softmax(dim=1)
    # A_CBP = softmax over the columns of Λᵀ: for audio segment i, weights over CBP segments j.
    a_cbp = (lam if full else lam.masked_fill(~mask[:, None, :], neg)).softmax(dim=2).transpose(1, 2)
    x_audio_t = a_audio.transpose(1, 2) @ x_audio                        # Eq. 2: X̃_audio = X_audio A_audio
    x_cbp_t = a_cbp.transpose(1, 2) @ x_cbp                              # Eq. 2: X̃_CBP = X_CBP A_CBP
    if not full:
        x_audio_t = x_audio_t * has_audio[:, None, None]                 # no audio: nothing to attend
        x_cbp_t = torch.where(has_audio[:, None, None], x_cbp_t, x_cbp) # no audio: no audio guidance
    return {"x_audio": x_audio_t, "x_cbp": x_cbp_t, "lam": lam, "a_audio": a_audio, "a_cbp": a_cbp}


class CrossAttentionFusion(nn.Module):
    """Multi-stage dense cross-attention between audio and CBP features (Eq. 1-3).

    Args:
        audio_dim: input audio dim (128 for VGGish).
        cbp_dim: input CBP dim (2048 for I3D RGB ⊕ flow).
        dim: ``d_x``, the common dim after the modality-specific FC encoders.
        stages: number of cross-attention stages, each with its own ``W``.
    """

    def __init__(self, audio_dim: int, cbp_dim: int, dim: int, stages: int, init_scale: float = 10.0):
        super().__init__()
        self.encode_audio = nn.Linear(audio_dim, dim)                    # modality-specific FC encoders
        self.encode_cbp = nn.Linear(cbp_dim, dim)
        # W starts as a scaled identity: Λ begins as a sharpened cosine similarity.
        self.weights = nn.ParameterList([nn.Parameter(torch.eye(dim) * init_scale) for _ in range(stages)])

    def forward(self, f_audio: torch.Tensor, f_cbp: torch.Tensor, mask: torch.Tensor, has_audio: torch.Tensor,
                return_stages: bool = False) -> dict:
        """``f_audio`` ``(B, T, Da)``, ``f_cbp`` ``(B, T, Dc)``, ``mask`` ``(B, T)``, ``has_audio`` ``(B,)``.

        Returns ``audio`` and ``cbp``: the last-stage perceptual features ``𝒳^(S)`` ``(B, T, d_x)``
        (audio zeros where there is no audio); with ``return_stages`` also the per-stage lists
        ``chi_audio`` / ``chi_cbp`` (``𝒳^(0..S)``) and ``tilde_audio`` / ``tilde_cbp`` (``X̃^(1..S)``).
        """
        audio_mask = mask & has_audio[:, None]
        am = audio_mask[..., None].to(f_audio.dtype)
        chi_audio = [self.encode_audio(f_audio * am) * am]                # 𝒳^(0)_audio = X_audio
        chi_cbp = [self.encode_cbp(f_cbp)]                               # 𝒳^(0)_CBP = X_CBP
        tilde_audio, tilde_cbp = [], []
        for weight in self.weights:
            att = cross_attention(chi_audio[-1], chi_cbp[-1], weight, audio_mask, mask)
            tilde_audio.append(att["x_audio"])
            tilde_cbp.append(att["x_cbp"])
            # Eq. 3: dense skip connections over all earlier stages, then tanh.
            chi_audio.append(torch.tanh(torch.stack(chi_audio).sum(0) + att["x_audio"]) * am)
            chi_cbp.append(torch.tanh(torch.stack(chi_cbp).sum(0) + att["x_cbp"]))
        out = {"audio": chi_audio[-1], "cbp": chi_cbp[-1]}
        if return_stages:
            out.update(chi_audio=chi_audio, chi_cbp=chi_cbp, tilde_audio=tilde_audio, tilde_cbp=tilde_cbp)
        return out
