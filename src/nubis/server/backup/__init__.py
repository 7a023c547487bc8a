"""Backup and restore of a whole platform: database, storage, local checkpoints, the key if asked.

``create_backup`` works while the platform runs; ``restore_backup`` fills an empty home (and an
empty database or storage) and leaves it empty on any failure; ``verify_backup`` checks an archive
without restoring it. ``schedule.py`` runs backups from ``nubis up --backup-every``.
"""

from nubis.server.backup.create import create_backup
from nubis.server.backup.manifest import Manifest
from nubis.server.backup.restore import Restored, RestoreTarget, Verified, restore_backup, verify_backup

__all__ = ["Manifest", "RestoreTarget", "Restored", "Verified", "create_backup", "restore_backup",
           "verify_backup"]
