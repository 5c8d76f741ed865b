"""Where events are kept: the protocol (:mod:`.base`), the database layer (:mod:`.db`)
and the backends (:mod:`.sqlite`)."""
