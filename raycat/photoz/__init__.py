"""The redshift model: from a cutout to a PDF.

``model`` builds the ResNet50 (or its tiny twin) and reads and writes the model artifact;
``train`` is the Ray Train loop; ``pdf`` turns softmax outputs into point estimates and
metrics; ``forward`` runs the network as PDF or z_mean functions; ``infer`` is the
Predictor that Ray Data's ``map_batches`` runs; ``attribute`` and ``uncertainty`` add
per-band Shapley attributions, MC-dropout and rotation checks.
"""
