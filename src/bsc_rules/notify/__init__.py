"""Notifications: what a message says (:mod:`.notices`), how it looks (:mod:`.render`,
:mod:`.charts`, templates), the monthly digest, and how it leaves (:mod:`.outbox`,
:mod:`.mailer`).
"""
