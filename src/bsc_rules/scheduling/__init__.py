"""When things happen: the instants and one tick (:mod:`.schedule`), on simulated time
(:mod:`.replay`) and on the wall clock (:mod:`.service`).
"""
