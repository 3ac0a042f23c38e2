"""The on-disk layout of `4tops_splitted.h5`, shared by the reader and the generator.

Per row of ``X_*``: ``N_OBJECTS`` object-type ids, then MET and MET-phi, then
``N_OBJECTS`` x (E, pT, eta, phi), object-major. Labels hold process ids 1-5.
"""

N_OBJECTS = 18
N_CONT = 4  # E, pT, eta, phi
N_GLOBALS = 2  # MET, MET-phi
N_COLUMNS = N_OBJECTS + N_GLOBALS + N_OBJECTS * N_CONT  # 92

CONT_NAMES = ("E", "pT", "eta", "phi")  # index = position in the 4-block
GLOBAL_NAMES = ("MET", "MET_phi")

# Object-type ids; 0 marks an empty (padded) slot.
OBJECT_TYPES = {0: "empty", 1: "jet", 2: "b-jet", 3: "e+", 4: "e-", 5: "mu+", 6: "mu-", 7: "photon"}
N_OBJECT_TYPES = 7

# 1-5 as in the real file; 6 (tt̄ + jets) only in files of the Pythia generator (expmatrix.data.pythia)
PROCESSES = {1: "4t", 2: "ttH", 3: "ttW", 4: "ttWW", 5: "ttZ", 6: "tt"}

SPLITS = ("train", "val", "test")
# The real file spells the training labels with a capital Y.
DEFAULT_KEYS = {
    "x_train": "X_train",
    "x_val": "X_val",
    "x_test": "X_test",
    "y_train": "Y_train",
    "y_val": "y_val",
    "y_test": "y_test",
}

# The thesis's feature sets by name (indices into CONT_NAMES): `--vect 4` and the flagship's `vect` factor.
VECTORS = {"4": [1, 2, 3], "5": [0, 1, 2, 3]}  # (pT, eta, phi) and (E, pT, eta, phi)
