"""The one home of vqswitch's on-disk names and format tags: every file, folder and tag another module writes or
recognises is spelled here, once, so a reader and a writer can never disagree.

Binary layouts themselves (byte order, header structs) live with the code that packs them: ``codes.py`` (the
fixed-length VQSC stream) and ``codec/container.py`` (the VQSF container); their magic numbers are here.
"""
from __future__ import annotations

# ------------------------------------------------------------------------------------------------ tags
SWAPPED_FORMAT = "vqswitch-swapped"      # config.json of a swapped model (adapters.save_swapped)
SWAPPED_FORMAT_VERSION = 1
RUN_FORMAT = "vqswitch-run"              # run.json of a fine-tuning run or a demo output
ENTROPY_FORMAT = "vqswitch-entropy"      # the entropy model's safetensors metadata
CODES_MAGIC, CODES_VERSION = b"VQSC", 1   # vqswitch.Codes.to_bytes: the fixed-length index stream
CONTAINER_MAGIC = b"VQSF"                # a .vqs file (vqswitch.codec)
CODEC_IDENTITY_TAG = b"vqswitch-codec-identity/1\0"  # prefix of the model identity hashed into a .vqs file

# ------------------------------------------------------------------------------------------------ model folders
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ENTROPY_FILE = "entropy_model.safetensors"
CARD_FILE = "README.md"

# ------------------------------------------------------------------------------------------------ run folders
RUN_INFO_FILE = "run.json"
EVALUATION_FILE = "eval.json"
TRAIN_LOG_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"                   # checkpoints/latest: the name of the newest complete checkpoint
FINAL_DIR = "final"
TRAINER_STATE_FILE = "trainer.pt"
LATENTS_NAME = "latents"                 # latents.npy + latents.json: the stage 1-2 latent cache
RUN_ENTRIES = (TRAIN_LOG_FILE, CHECKPOINTS_DIR, FINAL_DIR, RUN_INFO_FILE, f"{LATENTS_NAME}.npy",
               f"{LATENTS_NAME}.json")    # what `vqswitch finetune --overwrite` may remove from a run folder

# ------------------------------------------------------------------------------------------------ demo output folders
DEMO_METRICS_FILE = "metrics.json"       # `vqswitch demo`'s evaluation of every row (read by push, bench_codec)
DEMO_CHECKPOINT_DIR = "checkpoint"       # its fine-tuned swapped model (save_swapped)
DEMO_RUN_DIR = "run"                     # its STSCQ fine-tuning run folder (metrics.jsonl, checkpoints/, latents)
DEMO_BASELINE_RUN_DIR = "run-baseline-decoder"  # the fair reference's stage-3 run folder
DEMO_GRID_FILE = "reconstructions.png"

# ------------------------------------------------------------------------------------------------ the .vqs container
CONTAINER_VERSION = 1                    # the VQSF format version (vqswitch/codec/container.py); CONTAINER_MAGIC above

# ------------------------------------------------------------------------------------------------ face folders
PAIRS_FILE = "pairs.txt"                 # a face folder's verification pairs (LFW's name), used by load_face_folder

# ------------------------------------------------------------------------------------------------ the entropy model
ENTROPY_FORMAT_VERSION = 1               # format_version in the entropy model's metadata (ENTROPY_FORMAT above)

# ---------------------------------------------------------------------------------------------- fine-tuning checkpoints
CHECKPOINT_MODEL_DIR = "model"           # checkpoints/<name>/model/: the swapped model, beside trainer.pt
