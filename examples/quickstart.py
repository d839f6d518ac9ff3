"""Train an ESN, predict on raw sequences, save it, load it back, predict again.

Run it as a script (``.venv/bin/python examples/quickstart.py``) or cell by cell in a notebook;
it works offline (BasicMotions ships inside aeon) and takes a few seconds on a laptop.
"""

# %% Train: one call, any config key as a keyword (dotted keys through **{...})
from echoes import load_data, load_model, train

result = train(model="esn", data="uea:BasicMotions", tracking=False, **{"model.units": 300})
print(result.label, "test accuracy", result["test_accuracy"], f"in {result['train_seconds']:.2f}s")

# %% Predict on raw arrays: a list of (T_i, F) sequences (or an (N, T, F) array plus lengths).
# The model applies its own training standardisation and answers with class names.
raw = load_data(data="uea:BasicMotions", **{"data.standardize": False})
sequences = [raw.test.x[i, :n] for i, n in enumerate(raw.test.lengths)]
truth = [raw.class_names[y] for y in raw.test.y]
model = result.model
print(model)
print("predicted", list(model.predict(sequences[:4])), "true", truth[:4])
print("probabilities of the first sequence", model.predict_proba(sequences[:1]).round(3))
print("accuracy on the raw test sequences", model.score(sequences, truth))

# %% Save, load, predict again: the same answers
folder = model.save("esn-basicmotions")
again = load_model(folder)
assert (again.predict(sequences) == model.predict(sequences)).all()
print(f"saved to {folder}/ and reloaded: same predictions")
