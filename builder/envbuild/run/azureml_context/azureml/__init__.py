"""envbuild's stand-in for the ``azureml`` namespace (see ``azureml.core``).

Other ``azureml.*`` packages the image holds stay importable: this is a
namespace that extends its path over every ``azureml`` folder on ``sys.path``.
"""

__path__ = __import__("pkgutil").extend_path(__path__, __name__)
