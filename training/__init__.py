"""GENet_Res50 training: model, data pipeline, recipe, train and eval entry points."""
import runtime_env

runtime_env.configure()  # before any module of this package imports mindspore
