"""The object model: what an OaaS object is and how it changes.

- ``registry``: the class registry, ``ObjectMeta`` (identity) and fresh object ids.
- ``state``: ``ObjectState``, the bookkeeping of one live object, and its contract with
  the native layer (the slot names Rust reads).
- ``fields``: persisted fields (``FieldInfo``, the lazy descriptor, ``field()``).
- ``object``: ``OaasObject``: create, load, assignment, commit, delete.
- ``methods``: the decorators and ``MethodSpec``; ``calls``: how a call runs (turn,
  snapshot and rollback, retries, auto-commit).
- ``ref``: ``ObjectRef`` and ``ref()``; ``mapped``: memory-mapped fields.

The old module paths (``oaas_sdk.object``, ``oaas_sdk.methods``, ``oaas_sdk.ref``,
``oaas_sdk.mapped``) are these modules under another name.
"""
