"""Human in the loop: suggest tiles for review, ingest a person's corrections.

:mod:`.suggest` chooses tiles and writes a review folder, :mod:`.files` is that folder's
format, :mod:`.ingest` reads it back into the run; the stage that merges the answers into
later rounds is :mod:`pseudocell.stages.human`, the pure maths :mod:`pseudocell.core.review`.
"""
