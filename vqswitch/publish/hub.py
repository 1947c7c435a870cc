"""The upload: :func:`push` publishes a run's prepared folder on the Hugging Face Hub as one commit."""
from __future__ import annotations

import tempfile
from pathlib import Path

from vqswitch._checks import check_bool, check_repo_id, check_str, one_line
from vqswitch._io import read_json_object
from vqswitch.bits import bits_per_image
from vqswitch.formats import CONFIG_FILE

from .folder import OPTIONAL_FILES, prepare_upload

__all__ = ["push"]


def push(run_dir, repo_id: str, *, revision: str | None = None, private: bool | None = None,
         token: str | None = None, commit_message: str | None = None, create_pr: bool = False) -> str:
    """Publish a run's swapped model on the Hugging Face Hub as one commit; returns the commit (or PR) URL.

    The folder is prepared and validated (:func:`prepare_upload`) before anything touches the network, then
    ``HfApi(token=token).create_repo(repo_id, exist_ok=True, private=private)``, ``create_branch`` when
    ``revision`` names a branch other than main (and no PR is asked for), ``list_repo_files``, and one
    ``create_commit`` that adds every file and deletes the optional files (``eval.json``...) an earlier
    push left in the repository and this run does not have.

    Args:
        run_dir: a finetune run folder, a demo output folder or a swapped-model folder.
        repo_id: the Hub model id ``"org/name"``.
        revision: the branch to commit to (created if missing; default main); with ``create_pr``, the PR's base.
        private: visibility of a repository that does not exist yet (None: the Hub's default).
        token: a Hub token (None: the logged-in one or ``HF_TOKEN``).
        commit_message: default "Upload vqswitch swapped model (M=.., K=.., T=.., N bits per image)".
        create_pr: open a pull request instead of committing to the branch.
    Raises:
        TypeError/ValueError: bad arguments or a run folder prepare_upload refuses; nothing is uploaded then.
        OSError: the Hub could not be reached or refused the request (the huggingface_hub error is the
            ``__cause__``); the repository may have been created, but no files were committed.
    """
    check_repo_id("repo_id", repo_id)
    for name, value in (("revision", revision), ("token", token), ("commit_message", commit_message)):
        if check_str(name, value, optional=True) is not None and not value.strip():
            raise ValueError(f"{name} must be None or a non-empty str, got {value!r}")
    if private is not None:
        check_bool("private", private)
    check_bool("create_pr", create_pr)
    with tempfile.TemporaryDirectory(prefix="vqswitch-push-") as tmp:
        folder = prepare_upload(run_dir, Path(tmp) / "upload", repo_id=repo_id)
        if commit_message is None:
            q = read_json_object(folder / CONFIG_FILE, "config")["quantizer"]
            bits = bits_per_image(q["num_tokens"], q["codebook_size"], q["num_groups"])
            commit_message = (f"Upload vqswitch swapped model (M={q['num_groups']}, K={q['codebook_size']}, "
                              f"T={q['num_tokens']}, {bits} bits per image)")
        stale = [name for name in OPTIONAL_FILES if not (folder / name).exists()]
        from huggingface_hub import HfApi

        step = "connecting"
        try:
            api = HfApi(token=token)
            step = "creating the repository"
            api.create_repo(repo_id, exist_ok=True, private=private)
            if revision is not None and revision != "main" and not create_pr:
                step = f"creating the branch {revision!r}"
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            step = "listing the repository's files"
            existing = set(api.list_repo_files(repo_id, revision=revision))
            from huggingface_hub import CommitOperationAdd, CommitOperationDelete

            operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p))
                          for p in sorted(folder.iterdir()) if p.is_file()]
            operations += [CommitOperationDelete(path_in_repo=name) for name in stale if name in existing]
            step = "committing"
            info = api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message,
                                     revision=revision, create_pr=create_pr)
        except Exception as err:  # noqa: BLE001 - every Hub or network failure becomes one clear OSError
            raise OSError(f"pushing to the Hub repository {repo_id!r} failed while {step}: {type(err).__name__}: "
                          f"{one_line(err, limit=400)}; no files were committed") from err
    url = getattr(info, "pr_url", None) if create_pr else None
    return str(url or getattr(info, "commit_url", None) or info)


