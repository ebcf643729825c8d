# Hydra's configs, installed as the package split_alexnet.conf so `pkg://split_alexnet.conf`
# finds them from an editable install and from a wheel alike.
