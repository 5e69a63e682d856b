"""Human review of machine identifications: a static review site built from predictions.

``plantray review build`` (:mod:`plantray.commands.review_build`) reads predictions
(:mod:`~plantray.review.predictions`), turns rows into cards (:mod:`~plantray.review.cards`), selects, samples
and orders them (:mod:`~plantray.review.select`), makes thumbnails in Ray tasks
(:mod:`~plantray.review.thumbnails`) and streams the pages into a self-contained site
(:mod:`~plantray.review.site`, the page itself in ``assets/``) by the job in :mod:`~plantray.review.build`.
Nothing heavy is imported here, so ``plantray review build --help`` stays instant.
"""

# --order: the first page shows the cards a reviewer should see first (see plantray.review.select.order_keys)
ORDERS = ("agreement", "confidence", "species", "input")
