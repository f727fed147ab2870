"""python-etcd3's ``Lease`` handle (the restart-proof keeper arrives with the watch/lease work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..client import Etcd3Client


class Lease:
    """A granted lease: ``id``, ``ttl``; ``refresh()``, ``revoke()``; ``remaining_ttl``,
    ``granted_ttl`` and ``keys`` ask the server each time."""

    def __init__(self, lease_id: int, ttl: int, etcd_client: Etcd3Client | None = None) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.etcd_client = etcd_client

    def __repr__(self) -> str:
        return f"Lease(id={self.id}, ttl={self.ttl})"

    def _client(self) -> Etcd3Client:
        if self.etcd_client is None:
            raise ValueError("this Lease is not bound to a client")
        return self.etcd_client

    def revoke(self) -> bool:
        self._client().revoke_lease(self.id)
        return True

    def refresh(self) -> list[object]:
        return list(self._client().refresh_lease(self.id))

    @property
    def remaining_ttl(self) -> int:
        return int(self._client().get_lease_info(self.id).TTL)

    @property
    def granted_ttl(self) -> int:
        return int(self._client().get_lease_info(self.id).grantedTTL)

    @property
    def keys(self) -> list[bytes]:
        return list(self._client().get_lease_info(self.id).keys)
