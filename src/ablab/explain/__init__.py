"""What a trained image classifier looks at, and whether the picture can be trusted.

`maps`: attribution maps by method (captum, torchcam); `faithfulness`: deletion / insertion AUC
(Petsiuk et al. 2018) and the randomization sanity check (Adebayo et al. 2018); `activation_max`:
the input each class or channel responds to most; `figures`: the pictures; `job`: one model
from the MLflow store explained into a child run of the run that trained it (never retrained).
"""
