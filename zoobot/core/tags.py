"""The names of the tags Zoobot puts on its MLflow runs (and model versions), in one place.

The same names on every run make `mlflow.search_runs(filter_string="tags.step = 'convert'")`, the
UI's compare view, the pipeline's step reuse and the status report work without reading the code
that wrote them. Plain strings: nothing here imports MLflow, so code that only reads a run's tags
(the pipeline's `matches`, the report) can use them without it. Imported as
`from zoobot.core import tags as tag_names` (callers often have a `tags` dict of their own).
"""

# -- every run -----------------------------------------------------------------------------------------
STEP = "step"  # the entry point that made the run: simulate, convert, train, al_iteration, ...
CODE_VERSION = "code_version"  # hash of the package's source: what the pipeline's step reuse compares
GIT_COMMIT = "git_commit"

# -- what a run is about (also the parts of its name) -------------------------------------------------
SCHEMA = "schema"  # decision-tree schema: decals, gz2, ...
ARCHITECTURE = "architecture"
OUTPUT = "output"  # the model's output head (dirichlet, binomial, ...)
PRECISION = "precision"  # what precision="auto" (or an explicit one) became on the machine that trained
ARM = "arm"  # active learning: the acquisition arm of a campaign
ITERATION = "iteration"  # active learning: the iteration a run did
ACQUISITION = "acquisition"
DOWNLOAD = "download"  # what a download run fetched: catalog or images
BENCHMARK_MODE = "benchmark_mode"

# -- where a step's output is -------------------------------------------------------------------------
LOCAL_OUTPUT = "local_output"  # absolute folder the step wrote on the machine it ran on
OUTPUT_DIGEST = "output_digest"  # sha256 that identifies that output (catalog or manifest)
MODEL_URI = "model_uri"  # the logged model of a train run (models:/m-...)
BASE_MODEL = "base_model"  # a finetune run (and its registered version): the model it started from

# -- outcomes -------------------------------------------------------------------------------------------
STOPPED_EARLY = "stopped_early"
CALIBRATION = "calibration"  # a train run: the concentration scales fitted on validation, or why none were
CHAMPION = "champion"  # whether a train run's model took the registry alias, and if not who holds it
REGISTERED_MODEL = "registered_model"  # "NAME vN" of an iteration's model
LABEL_SAVING_NOTE = "label_saving_note"
SOURCE = "source"  # a catalog download: the published release it came from
VERIFIED = "verified"  # a catalog download: its checksum matched the published one
SHA256 = "sha256"

# -- restarts and reuse ---------------------------------------------------------------------------------
RESUMED_INTO = "resumed_into"  # on an empty launch: the interrupted run its work went into
COMPLETED_AFTER_RESTART = "completed_after_restart"
REUSED_PREFIX = "reused."  # reused.<entry point> = the finished run the pipeline took instead
RUN_PREFIX = "run."  # run.<step> = each step's run, on the pipeline's parent run

# -- MLflow's own (reserved) tags that Zoobot sets ---------------------------------------------------
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"  # the run's description in the UI

# -- on registered model versions, not runs ------------------------------------------------------------
VAL_LOSS = "val_loss"  # what crowning compares
