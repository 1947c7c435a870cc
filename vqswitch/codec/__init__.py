"""An image codec on a fine-tuned swapped tokenizer: images -> codes -> one compressed file, and back.

:func:`compress` turns images into the model's discrete codes (:func:`vqswitch.adapters.encode_codes`) and
stores them in a self-describing **VQSF container**, either at the fixed length of the quantizer
(``bits_per_image = T * ceil(log2 K) + ceil(log2 M)`` bits per image) or entropy coded with the model's
:class:`~vqswitch.entropy.EntropyModel` (fewer bits for the same codes). :func:`decompress` checks the container,
recovers exactly the same codes -- the codec is lossless on codes, always; only the tokenizer is lossy -- and
reconstructs the images with :func:`vqswitch.adapters.decode_codes`, clamped to the model's pixel range.
:func:`compress_files` / :func:`decompress_file` do the same from image files to a container file and from a
container file to PNGs, atomically.

A container names the model that made it by its **identity** (:func:`model_identity`): a sha256 of the swapped
model's weights and buffers and of the entropy model. Decoding with any other model is refused, because the same
codes would silently give other pictures. When the model came from the Hub (a repo id, or a folder of the Hub
cache), the container also records the repo id and the commit it resolved to, so :func:`decompress` can load it
by itself. A local folder is never recorded: a path means nothing on another machine, breaks when the working
folder changes and shows the machine's layout; such a file names its model by identity only, and is decoded by
passing the model.

A reader checks the magic, the CRC, the version and every length against the bytes actually present before it
decodes anything (a header claiming four billion images allocates nothing), and every failure to read a container
raises :class:`CodecError` (a ``ValueError``) saying what is wrong and what to do.

One job per module:

* :mod:`~vqswitch.codec.container`: the VQSF byte format (its layout is documented there): build and parse;
* :mod:`~vqswitch.codec.model`: :class:`CodecModel`, :func:`load_codec_model`, :func:`model_identity`;
* :mod:`~vqswitch.codec.images`: images in (tensors, PIL images, files) and out (PNG files, safe names);
* :mod:`~vqswitch.codec.compress`: images / codes -> container (:func:`compress`, :func:`compress_codes`,
  :func:`compress_files`, :class:`CompressReport`);
* :mod:`~vqswitch.codec.decompress`: container -> codes / images (:func:`decompress_codes`, :func:`decompress`,
  :func:`decompress_file`, :class:`DecodedImages`).
"""
from .compress import CompressReport, compress, compress_codes, compress_files
from .container import FORMAT_VERSION, MAGIC, MODES, CodecError, ContainerHeader, read_header
from .decompress import DecodedImages, decompress, decompress_codes, decompress_file
from .images import output_file_names
from .model import CodecModel, load_codec_model, model_identity

__all__ = ["CodecError", "CodecModel", "ContainerHeader", "DecodedImages", "CompressReport", "load_codec_model",
           "model_identity", "compress", "decompress", "read_header", "compress_codes", "decompress_codes",
           "compress_files", "decompress_file",
           "output_file_names", "MAGIC", "FORMAT_VERSION", "MODES"]
