"""The operations on files: export labels as Parquet, import items, export and import model files.
Over the socket the server hands each of them a private copy or a private target (core/api/server.py),
never a path the client names."""

from __future__ import annotations

from dataclasses import asdict

from labelloop.core.api.protocol import ApiError
from labelloop.core.store import as_store_error
from labelloop.core.util.errors import LabelloopError


class InProcess:
    """Marks the connection of an in-process client (core/api/client.py LocalClient)."""


def export(svc, actor: str, path: str, what: str = "final") -> dict:
    """Final labels (or the event log) as Parquet at ``path``."""
    from labelloop.core.store.exports import export_parquet

    return asdict(export_parquet(svc.project, path, what=what))


def import_(
    svc,
    actor: str,
    path: str,
    text_col: str = "text",
    id_col: str | None = None,
    label_col: str | None = None,
    split_col: str | None = None,
    meta_cols: list[str] | None = None,
    skip_invalid: bool = False,
    label_sep: str = "|",
    dedupe: bool = False,
    rejects: str | None = None,
    source_name: str | None = None,
) -> dict:
    """Items from CSV, JSON Lines or Parquet at ``path`` (a private copy when it came over the socket)."""
    from labelloop.core.store.imports import import_file

    try:
        r = import_file(
            svc.project,
            path,
            text_col=text_col,
            id_col=id_col,
            label_col=label_col,
            split_col=split_col,
            meta_cols=meta_cols,
            skip_invalid=skip_invalid,
            label_sep=label_sep,
            dedupe=dedupe,
            rejects_path=rejects,
            actor=actor,
            source_name=source_name,
        )
    except LabelloopError as exc:
        if source_name and path in str(exc) and as_store_error(exc) is None:
            # the server imports a private copy: the message names the user's file
            raise ApiError("bad_request", str(exc).replace(path, source_name)) from None
        raise
    svc.reset_message_ids()  # re-read on next use
    return {**asdict(r), "duplicate_lines": r.duplicate_lines()}


def model_export(svc, actor: str, path: str, version: int | None = None) -> dict:
    from labelloop.core.loop.transfer import export_model

    out, v = export_model(svc.project, path, version)
    return {"path": str(out), "version": v}


def model_import(svc, actor: str, path: str, trust: bool = False, source_name: str | None = None) -> dict:
    from labelloop.core.loop.transfer import import_model

    if trust and svc.request_conn is not None and not isinstance(svc.request_conn, InProcess):
        raise ApiError(
            "denied",
            "--trust loads a pickle, which can run code: not through the server. Stop "
            "the server and run labelloop model import --trust as the project's owner.",
        )
    return {"version": import_model(svc.project, path, trust=trust)}


def pool_register(
    svc, actor: str, folder: str | None = None, id_col: str = "id", text_col: str = "text", refresh: bool = False
) -> dict:
    """A folder of Parquet files as the project's pool, not copied in (core/loop/poolround.py). Only with
    the server stopped: the folder is read with the rights of whoever runs this, which a server must
    not lend to a client."""
    from labelloop.core.loop.poolround import register_pool

    if svc.request_conn is not None and not isinstance(svc.request_conn, InProcess):
        raise ApiError(
            "denied",
            "an external pool is registered with the project's server stopped (the folder is read with "
            "your rights, not the server's): stop labelloop serve, run the import, start it again.",
        )
    if folder is None and not refresh:
        raise ApiError("bad_request", "name the folder of Parquet files to register.")
    return register_pool(svc.project, folder or "", id_col=id_col, text_col=text_col, refresh=refresh)
