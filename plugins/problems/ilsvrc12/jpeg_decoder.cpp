// libjpeg reports fatal errors through error_exit, which must not return: we leave with
// longjmp back into decode_jpeg. Between setjmp and longjmp no C++ object is constructed in
// that frame, and every buffer libjpeg needs comes from its own pools, freed by
// jpeg_destroy_decompress, so nothing leaks.
#include "jpeg_decoder.hpp"

#include <csetjmp>
#include <cstdlib>
#include <cstdio>
// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>

namespace ql::ilsvrc12 {

namespace {

struct ErrorManager {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void on_error(j_common_ptr info) {
  auto* errors = reinterpret_cast<ErrorManager*>(info->err);
  (*info->err->format_message)(info, errors->message);
  std::longjmp(errors->jump, 1);
}

// Corrupt-data warnings (truncated file, bad Huffman code) count as errors: keep the first.
void on_message(j_common_ptr info, int level) {
  auto* errors = reinterpret_cast<ErrorManager*>(info->err);
  if (level < 0 && info->err->num_warnings++ == 0) (*info->err->format_message)(info, errors->message);
}

}  // namespace

bool decode_jpeg(const std::vector<std::uint8_t>& bytes, const std::function<int(int, int)>& choose_denom,
                 JpegImage& image, std::string& error) {
  if (bytes.size() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8) {
    error = "not a JPEG file (no SOI marker)";
    return false;
  }
  jpeg_decompress_struct info;
  ErrorManager errors;
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = on_error;
  errors.manager.emit_message = on_message;
  errors.message[0] = '\0';
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&info);
    error = errors.message;
    return false;
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  const bool cmyk = info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK;
  info.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  info.scale_num = 1;
  info.scale_denom = static_cast<unsigned>(choose_denom(static_cast<int>(info.image_width),
                                                        static_cast<int>(info.image_height)));
  jpeg_start_decompress(&info);
  const int width = static_cast<int>(info.output_width), height = static_cast<int>(info.output_height);
  const int components = info.output_components;
  JSAMPARRAY row = (*info.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&info), JPOOL_IMAGE,
                                             static_cast<JDIMENSION>(width * components), 1);
  image.rgb.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
  std::uint8_t* out = image.rgb.data();
  while (info.output_scanline < info.output_height) {
    jpeg_read_scanlines(&info, row, 1);
    const JSAMPLE* in = row[0];
    if (cmyk) {
      // Adobe's CMYK JPEGs are stored inverted: R = C * K / 255, and so on.
      for (int x = 0; x < width; ++x, in += 4) {
        *out++ = static_cast<std::uint8_t>(in[0] * in[3] / 255);
        *out++ = static_cast<std::uint8_t>(in[1] * in[3] / 255);
        *out++ = static_cast<std::uint8_t>(in[2] * in[3] / 255);
      }
    } else {
      for (int x = 0; x < width * 3; ++x) *out++ = in[x];
    }
  }
  jpeg_finish_decompress(&info);
  const bool corrupt = errors.manager.num_warnings > 0;
  image.width = width;
  image.height = height;
  image.full_width = static_cast<int>(info.image_width);
  image.full_height = static_cast<int>(info.image_height);
  image.scale_denom = static_cast<int>(info.scale_denom);
  jpeg_destroy_decompress(&info);
  if (corrupt) {
    error = std::string("corrupt JPEG data: ") + errors.message;
    return false;
  }
  return true;
}

std::vector<std::uint8_t> encode_jpeg(const std::vector<std::uint8_t>& rgb, int width, int height, int quality) {
  jpeg_compress_struct info;
  jpeg_error_mgr errors;
  info.err = jpeg_std_error(&errors);
  jpeg_create_compress(&info);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&info, &buffer, &size);
  info.image_width = static_cast<JDIMENSION>(width);
  info.image_height = static_cast<JDIMENSION>(height);
  info.input_components = 3;
  info.in_color_space = JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = const_cast<JSAMPLE*>(rgb.data() + static_cast<std::size_t>(info.next_scanline) * width * 3);
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  std::vector<std::uint8_t> bytes(buffer, buffer + size);
  jpeg_destroy_compress(&info);
  std::free(buffer);
  return bytes;
}

}  // namespace ql::ilsvrc12
