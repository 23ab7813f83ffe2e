"""Models at rest: numbered versions of a name with aliases, the model card, the copy index of what a
version was trained on."""
