"""The text template of QA documents (one for both styles; docs/recipe.md: the paper does not publish its own).

short: the answer as given, a leading `<think>...</think>` block (if any) dropped;
long: the answer as given, its thinking kept inline. Chat messages map to the same template (data_prep.records).
"""

QA_TEMPLATE = "Question: {question}\nAnswer: {answer}"
