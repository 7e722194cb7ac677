// libjpeg reports fatal errors through error_exit, which must not return: we leave with
// longjmp back into decode_jpeg. Between setjmp and longjmp no C++ object is constructed in
// that frame, and every buffer libjpeg needs comes from its own pools, freed by
// jpeg_destroy_decompress, so nothing leaks.
#include "jpeg_decoder.hpp"

#include <csetjmp>
#include <algorithm>
#include <cstdlib>
#include <cstring>
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

bool decode_jpeg(const std::vector<std::uint8_t>& bytes, const std::function<DecodePlan(int, int)>& plan,
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
  const DecodePlan chosen = plan(static_cast<int>(info.image_width), static_cast<int>(info.image_height));
  const int eighths = std::clamp(chosen.scale_eighths, 1, 8);
  info.scale_num = static_cast<unsigned>(eighths);
  info.scale_denom = 8;
  jpeg_start_decompress(&info);
  // The part to decode, at the decoded scale; libjpeg widens the columns to whole blocks.
  auto scaled = [eighths](int v) { return v * eighths / 8; };
  auto scaled_up = [eighths](int v) { return (v * eighths + 7) / 8; };
  JDIMENSION x = 0, width = info.output_width;
  JDIMENSION y = 0, height = info.output_height;
  if (chosen.width > 0 && chosen.height > 0) {
    const int out_w = static_cast<int>(info.output_width), out_h = static_cast<int>(info.output_height);
    x = static_cast<JDIMENSION>(std::min(scaled(chosen.x), out_w - 1));
    y = static_cast<JDIMENSION>(std::min(scaled(chosen.y), out_h - 1));
    width = static_cast<JDIMENSION>(std::max(1, std::min(scaled_up(chosen.x + chosen.width), out_w) - static_cast<int>(x)));
    height = static_cast<JDIMENSION>(std::max(1, std::min(scaled_up(chosen.y + chosen.height), out_h) - static_cast<int>(y)));
    if (width < info.output_width) jpeg_crop_scanline(&info, &x, &width);
    if (y > 0) jpeg_skip_scanlines(&info, y);
  }
  const int components = info.output_components;
  JSAMPARRAY row = (*info.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&info), JPOOL_IMAGE,
                                             static_cast<JDIMENSION>(info.output_width * components), 1);
  image.rgb.resize(static_cast<std::size_t>(width) * height * 3);
  std::uint8_t* out = image.rgb.data();
  for (JDIMENSION r = 0; r < height; ++r) {
    jpeg_read_scanlines(&info, row, 1);
    const JSAMPLE* in = row[0];
    if (cmyk) {
      // Adobe's CMYK JPEGs are stored inverted: R = C * K / 255, and so on.
      for (JDIMENSION c = 0; c < width; ++c, in += 4) {
        *out++ = static_cast<std::uint8_t>(in[0] * in[3] / 255);
        *out++ = static_cast<std::uint8_t>(in[1] * in[3] / 255);
        *out++ = static_cast<std::uint8_t>(in[2] * in[3] / 255);
      }
    } else {
      std::memcpy(out, in, static_cast<std::size_t>(width) * 3);
      out += static_cast<std::size_t>(width) * 3;
    }
  }
  const bool corrupt = errors.manager.num_warnings > 0;
  image.width = static_cast<int>(width);
  image.height = static_cast<int>(height);
  image.x = static_cast<int>(x);
  image.y = static_cast<int>(y);
  image.full_width = static_cast<int>(info.image_width);
  image.full_height = static_cast<int>(info.image_height);
  image.scale_eighths = eighths;
  // The rows below the part are not needed: stop without decoding them.
  jpeg_abort_decompress(&info);
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
