"""What packages agree on, in one place: names, times, conditions and the model card.

Every package may import these modules; they import nothing of Plantwatch's (and
nothing outside the standard library), so no cycle can run through them
(tests/unit/test_layering.py checks it).
"""
