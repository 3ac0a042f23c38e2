"""A simple detector: isolated leptons and photons, anti-kt jets with a resolution and b-tagging, MET.

`Detector` holds every parameter (`--detector FILE.yaml` overrides any of them). `reconstruct` turns a chunk of
Pythia events into rows of the 4tops layout; it is vectorised over the particles of an event and clusters the
jets of the whole chunk in one FastJet call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import yaml

from expmatrix.config.layout import N_COLUMNS, N_OBJECTS
from expmatrix.data.fourtops import DataError
from expmatrix.data.pythia.particles import Particles

ELECTRON, MUON, PHOTON = 11, 13, 22


@dataclass(frozen=True)
class Detector:
    """The emulation's parameters (GeV, radians)."""

    jet_r: float = 0.4  # anti-kt radius
    jet_pt_min: float = 25.0  # after the resolution smearing
    jet_eta_max: float = 2.5
    jer_stochastic: float = 0.8  # sigma(pT)/pT = a / sqrt(pT/GeV) (+) c, in quadrature
    jer_constant: float = 0.05
    btag_eff: float = 0.77  # P(tag) of a jet with a B hadron within b_match_dr
    mistag: float = 0.01  # P(tag) of any other jet
    b_match_dr: float = 0.3
    b_hadron_pt_min: float = 5.0
    lepton_pt_min: float = 10.0
    electron_eta_max: float = 2.47
    muon_eta_max: float = 2.5
    photon_pt_min: float = 20.0
    photon_eta_max: float = 2.37
    iso_cone: float = 0.3  # isolation: summed pT of the other visible particles in this cone ...
    iso_max: float = 0.15  # ... below this fraction of the candidate's pT
    calo_eta_max: float = 4.9  # visible particles beyond it are lost (they count in MET)
    ht_min: float = 400.0  # events with a smaller HT (jets + leptons, as the built-in generator) are not kept


def load_detector(path: str | Path | None) -> Detector:
    """The default `Detector`, with the keys of a YAML file overriding it; an unknown key is a `DataError`."""
    if path is None:
        return Detector()
    given = yaml.safe_load(Path(path).read_text()) or {}
    valid = [f.name for f in fields(Detector)]
    unknown = [k for k in given if k not in valid] if isinstance(given, dict) else ["(not a mapping)"]
    if unknown:
        raise DataError(f"{path}: unknown detector key {', '.join(map(str, unknown))}; valid: {', '.join(valid)}")
    return Detector(**{k: float(v) for k, v in given.items()})


def kinematics(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pT, eta, phi in [-pi, pi) of momenta (..., >=3) = px, py, pz."""
    pt = np.hypot(p[..., 0], p[..., 1])
    eta = np.arcsinh(np.divide(p[..., 2], pt, out=np.full_like(pt, 1e9), where=pt > 0))
    phi = np.arctan2(p[..., 1], p[..., 0])
    return pt, eta, np.where(phi >= np.pi, -np.pi, phi)


def delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    """(A, B) distances in (eta, phi) between A and B directions."""
    dphi = np.angle(np.exp(1j * (phi1[:, None] - phi2[None, :])))
    return np.hypot(eta1[:, None] - eta2[None, :], dphi)


def isolated(ev: Particles, det: Detector) -> np.ndarray:
    """Indices (into `ev.visible`) of the isolated electrons, muons and photons inside their acceptance."""
    pid = np.abs(ev.visible[:, 4])
    pt, eta, phi = kinematics(ev.visible)
    pt_min = np.select([pid == PHOTON], [det.photon_pt_min], det.lepton_pt_min)
    eta_max = np.select([pid == ELECTRON, pid == MUON], [det.electron_eta_max, det.muon_eta_max], det.photon_eta_max)
    cand = np.flatnonzero(np.isin(pid, (ELECTRON, MUON, PHOTON)) & (pt > pt_min) & (np.abs(eta) < eta_max))
    if not len(cand):
        return cand
    near = delta_r(eta[cand], phi[cand], eta, phi) < det.iso_cone
    cone = (near * pt[None, :]).sum(axis=1) - pt[cand]
    return cand[cone < det.iso_max * pt[cand]]


LEPTON_IDS = {-ELECTRON: 3, ELECTRON: 4, -MUON: 5, MUON: 6, PHOTON: 7}  # e+, e-, mu+, mu-, photon (layout ids)


def _cluster(inputs: list[np.ndarray], det: Detector) -> list[np.ndarray]:
    """Anti-kt jets (px, py, pz, E) of each event's inputs (P, >=4), one FastJet call for all events."""
    import awkward as ak
    import fastjet

    counts = np.array([len(x) for x in inputs])
    flat = np.concatenate(inputs)[:, :4] if len(inputs) else np.zeros((0, 4))
    arrays = {k: ak.unflatten(flat[:, i], counts) for i, k in enumerate(("px", "py", "pz", "E"))}
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, det.jet_r)
    with _quiet_stdout():  # FastJet prints its banner once per process
        jets = fastjet.ClusterSequence(ak.zip(arrays), definition).inclusive_jets(min_pt=det.jet_pt_min / 2)
    n = ak.num(jets).to_numpy()
    out = np.stack([ak.flatten(jets[k]).to_numpy() for k in ("px", "py", "pz", "E")], axis=1)
    return np.split(out, np.cumsum(n)[:-1])


class _quiet_stdout:
    def __enter__(self):
        self.saved = os.dup(1)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)

    def __exit__(self, *exc):
        os.dup2(self.saved, 1)
        os.close(self.saved)


def _jets(raw: np.ndarray, ev: Particles, det: Detector, rng: np.random.Generator):
    """Smeared, tagged jets (rows: E, pT, eta, phi, id) in acceptance, and their (px, py) shift for MET."""
    pt, eta, phi = kinematics(raw)
    sigma = np.hypot(det.jer_stochastic / np.sqrt(np.maximum(pt, 1.0)), det.jer_constant)
    scale = np.maximum(1.0 + sigma * rng.standard_normal(len(raw)), 0.0)
    smeared = raw * scale[:, None]
    shift = (smeared - raw)[:, :2].sum(axis=0)
    bpt, beta, bphi = kinematics(ev.b_hadrons)
    bs = bpt > det.b_hadron_pt_min
    has_b = (delta_r(eta, phi, beta[bs], bphi[bs]) < det.b_match_dr).any(axis=1)
    tagged = rng.uniform(size=len(raw)) < np.where(has_b, det.btag_eff, det.mistag)
    keep = (pt * scale > det.jet_pt_min) & (np.abs(eta) < det.jet_eta_max)
    rows = np.column_stack([smeared[:, 3], pt * scale, eta, phi, np.where(tagged, 2, 1)])
    return rows[keep], shift


def _row(objects: np.ndarray, met: np.ndarray) -> np.ndarray:
    """One row of the layout from objects (n, 5: E, pT, eta, phi, id) and the MET vector (px, py)."""
    objects = objects[np.argsort(-objects[:, 1], kind="stable")][:N_OBJECTS]
    row = np.zeros(N_COLUMNS, dtype=np.float32)
    row[: len(objects)] = objects[:, 4]
    row[N_OBJECTS] = np.hypot(*met)
    row[N_OBJECTS + 1] = kinematics(np.array([*met, 0.0]))[2]
    row[N_OBJECTS + 2 : N_OBJECTS + 2 + 4 * len(objects)] = objects[:, :4].reshape(-1)
    return row


def reconstruct(chunk: list[Particles], det: Detector, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the layout (n, 92) of the events of `chunk` that pass the HT cut, and their indices in `chunk`."""
    iso = [isolated(ev, det) for ev in chunk]
    in_calo = [np.abs(kinematics(ev.visible)[1]) < det.calo_eta_max for ev in chunk]
    inputs = [ev.visible[np.isin(np.arange(len(ev.visible)), keep, invert=True) & calo]
              for ev, keep, calo in zip(chunk, iso, in_calo, strict=True)]  # fmt: skip
    rows, kept = [], []
    for i, (ev, keep, raw) in enumerate(zip(chunk, iso, _cluster(inputs, det), strict=True)):
        jets, shift = _jets(raw, ev, det, rng)
        found = ev.visible[keep]
        ids = [LEPTON_IDS[int(pid)] for pid in found[:, 4]]
        leptons = np.column_stack([found[:, 3], *kinematics(found), ids]).reshape(-1, 5)
        objects = np.concatenate([jets, leptons])
        if objects[objects[:, 4] < 7, 1].sum() <= det.ht_min:  # HT of jets and leptons
            continue
        visible = ev.visible[in_calo[i], :2].sum(axis=0)
        rows.append(_row(objects, -(visible + shift)))
        kept.append(i)
    return np.array(rows, dtype=np.float32).reshape(-1, N_COLUMNS), np.array(kept, dtype=np.int64)
